//! Property: a generated well-formed pipeline (1-50 requests with random methods,
//! targets, headers, `Content-Length` and chunked bodies) frames to exactly the
//! requests it was generated from, and to the same requests whatever the cut
//! points it arrives with. This is what pipelining over TCP depends on.

#[allow(dead_code)]
mod fuzz_checks;

use fuzz_checks::{feed, Outcome};
use proptest::collection::vec;
use proptest::prelude::*;
use pyrs_parser::Limits;

/// A request as generated, with what the framer must report for it.
#[derive(Debug, Clone)]
struct Gen {
    method: String,
    target: String,
    /// The HTTP/1.x the framer processes the request as (0 or 1).
    minor: u8,
    /// A later minor version sent instead of 1 (RFC 9110 §2.5: processed as 1.1).
    later_minor: Option<u8>,
    /// Fields after `Host` (if any), as sent.
    fields: Vec<(String, String)>,
    body: Body,
    connection: Option<&'static str>,
    expect_continue: bool,
    /// Bare LF instead of CRLF in the head.
    bare_lf: bool,
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Length(Vec<u8>),
    /// Chunks (each non-empty), an extension per chunk (maybe empty), trailers.
    Chunked(Vec<(Vec<u8>, String)>, Vec<(String, String)>),
}

impl Gen {
    fn data(&self) -> Vec<u8> {
        match &self.body {
            Body::None => Vec::new(),
            Body::Length(b) => b.clone(),
            Body::Chunked(chunks, _) => chunks.iter().flat_map(|(c, _)| c.clone()).collect(),
        }
    }

    fn keep_alive(&self) -> bool {
        match (self.minor, self.connection) {
            (_, Some("close")) => false,
            (1, _) => true,
            (_, c) => c == Some("keep-alive"),
        }
    }

    /// The header fields in the order they are sent.
    fn all_fields(&self) -> Vec<(String, String)> {
        let mut f = Vec::new();
        if self.minor == 1 {
            f.push(("Host".to_owned(), "example.com".to_owned()));
        }
        f.extend(self.fields.iter().cloned());
        if let Some(c) = self.connection {
            f.push(("Connection".to_owned(), c.to_owned()));
        }
        if self.expect_continue {
            f.push(("Expect".to_owned(), "100-continue".to_owned()));
        }
        match &self.body {
            Body::None => {}
            Body::Length(b) => f.push(("Content-Length".to_owned(), b.len().to_string())),
            Body::Chunked(..) => f.push(("Transfer-Encoding".to_owned(), "chunked".to_owned())),
        }
        f
    }

    fn wire(&self) -> Vec<u8> {
        let eol = if self.bare_lf { "\n" } else { "\r\n" };
        let sent_minor = self.later_minor.unwrap_or(self.minor);
        let mut w = format!("{} {} HTTP/1.{sent_minor}{eol}", self.method, self.target);
        for (n, v) in self.all_fields() {
            w.push_str(&format!("{n}: {v}{eol}"));
        }
        w.push_str(eol);
        let mut w = w.into_bytes();
        match &self.body {
            Body::None => {}
            Body::Length(b) => w.extend_from_slice(b),
            Body::Chunked(chunks, trailers) => {
                for (c, ext) in chunks {
                    w.extend_from_slice(format!("{:x}{ext}\r\n", c.len()).as_bytes());
                    w.extend_from_slice(c);
                    w.extend_from_slice(b"\r\n");
                }
                w.extend_from_slice(b"0\r\n");
                for (n, v) in trailers {
                    w.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
                }
                w.extend_from_slice(b"\r\n");
            }
        }
        w
    }
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
}

/// A field name that the generator does not also emit itself.
fn field_name() -> impl Strategy<Value = String> {
    token().prop_filter("reserved name", |n| {
        ![
            "host",
            "connection",
            "expect",
            "content-length",
            "transfer-encoding",
        ]
        .contains(&n.to_ascii_lowercase().as_str())
    })
}

/// Visible characters and inner spaces, no leading or trailing whitespace.
fn field_value() -> impl Strategy<Value = String> {
    "([!-~]([ !-~]{0,20}[!-~])?)?"
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_owned()),
        Just("HEAD".to_owned()),
        Just("POST".to_owned()),
        Just("PUT".to_owned()),
        Just("DELETE".to_owned()),
        Just("OPTIONS".to_owned()),
        Just("PATCH".to_owned()),
        "[A-Z]{1,10}".prop_filter("CONNECT is refused", |m| m != "CONNECT"),
    ]
}

/// Origin-form and absolute-form targets from every byte class a target may have:
/// unreserved, sub-delims, `:`, `@`, pct-encodings, and `/` and `?` in the query.
fn target() -> impl Strategy<Value = String> {
    let path = "(/([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2}){0,8}){1,4}";
    let query = "(\\?([A-Za-z0-9=&/?:@]|%[0-9A-F]{2}){0,16})?";
    prop_oneof![
        4 => (path, query).prop_map(|(p, q)| format!("{p}{q}")),
        1 => ("[a-z]{1,8}(\\.[a-z]{1,5})?", path).prop_map(|(h, p)| format!("http://{h}{p}")),
    ]
}

fn chunk_ext() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => token().prop_map(|n| format!(";{n}")),
        1 => (token(), token()).prop_map(|(n, v)| format!(";{n}={v}")),
        1 => (token(), "[ !#-\\[\\]-~]{0,10}").prop_map(|(n, v)| format!(" ; {n} = \"{v}\\\"\"")),
    ]
}

fn body(minor: u8) -> BoxedStrategy<Body> {
    let length = vec(any::<u8>(), 0..64).prop_map(Body::Length);
    if minor == 0 {
        return prop_oneof![Just(Body::None), length].boxed();
    }
    let chunked = (
        vec((vec(any::<u8>(), 1..40), chunk_ext()), 0..5),
        vec((field_name(), field_value()), 0..3),
    )
        .prop_map(|(c, t)| Body::Chunked(c, t));
    prop_oneof![Just(Body::None), length, chunked].boxed()
}

fn request() -> impl Strategy<Value = Gen> {
    (0u8..=1)
        .prop_flat_map(|minor| {
            (
                method(),
                target(),
                Just(minor),
                vec((field_name(), field_value()), 0..6),
                body(minor),
                prop_oneof![
                    6 => Just(None),
                    1 => Just(Some("close")),
                    1 => Just(Some("keep-alive")),
                ],
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.1),
                prop::option::weighted(0.1, 2u8..=9),
            )
        })
        .prop_map(
            |(method, target, minor, fields, body, connection, expect_continue, bare_lf, later)| {
                Gen {
                    method,
                    target,
                    minor,
                    later_minor: later.filter(|_| minor == 1),
                    fields,
                    body,
                    connection,
                    expect_continue,
                    bare_lf,
                }
            },
        )
}

/// The pipeline and cut points into it (as fractions, scaled to its length).
fn pipeline() -> impl Strategy<Value = (Vec<Gen>, Vec<u32>)> {
    (vec(request(), 1..=50), vec(any::<u32>(), 0..24))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_pipeline_frames_as_generated_whole_or_cut((gens, raw_cuts) in pipeline()) {
        let limits = Limits::default();
        let wire: Vec<u8> = gens.iter().flat_map(Gen::wire).collect();
        let whole = feed(&wire, &[], &limits);
        prop_assert_eq!(whole.error, None);
        prop_assert_eq!(whole.requests.len(), gens.len());
        for (g, r) in gens.iter().zip(&whole.requests) {
            prop_assert_eq!(&r.method, g.method.as_bytes());
            prop_assert_eq!(&r.target, g.target.as_bytes());
            prop_assert_eq!(r.minor, g.minor);
            let fields: Vec<(Vec<u8>, Vec<u8>)> = g
                .all_fields()
                .into_iter()
                .map(|(n, v)| (n.into_bytes(), v.into_bytes()))
                .collect();
            prop_assert_eq!(&r.headers, &fields);
            prop_assert_eq!(&r.body, &g.data());
            prop_assert_eq!(r.keep_alive, g.keep_alive());
            prop_assert_eq!(r.expect_continue, g.expect_continue && g.minor == 1);
            prop_assert_eq!(r.wire_len, g.wire().len());
        }
        let mut cuts: Vec<usize> = raw_cuts
            .iter()
            .map(|&c| (c as usize) % (wire.len() + 1))
            .collect();
        cuts.sort_unstable();
        let split: Outcome = feed(&wire, &cuts, &limits);
        prop_assert_eq!(split, whole, "cut at {:?}", cuts);
    }

    #[test]
    fn generated_pipeline_frames_the_same_byte_by_byte(gens in vec(request(), 1..=4)) {
        let limits = Limits::default();
        let wire: Vec<u8> = gens.iter().flat_map(Gen::wire).collect();
        let every: Vec<usize> = (1..wire.len()).collect();
        prop_assert_eq!(feed(&wire, &every, &limits), feed(&wire, &[], &limits));
    }
}
