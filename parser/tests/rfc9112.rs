//! RFC 9112 framing rules as a table: one named row per rule, with the request
//! bytes and the expected outcome (requests framed, or the error and the status the
//! server answers with). Every row is checked fed whole, cut at every byte (or at a
//! stride for long rows), and byte by byte when short, with the shared fuzz checks.

#[allow(dead_code)]
mod fuzz_checks;

use fuzz_checks::{feed, Outcome};
use pyrs_parser::{Limits, ParseError, DEFAULT_MAX_HEAD, DEFAULT_MAX_REQUEST_LINE};

/// What a row expects.
#[derive(Debug)]
enum Expect {
    /// This many requests framed, the last with this body, and no error.
    Ok {
        requests: usize,
        last_body: &'static [u8],
    },
    /// No request framed; this error, answered with this status.
    Err(ParseError, u16),
}

use Expect::{Err as Rejected, Ok as Accepted};

struct Row {
    name: &'static str,
    /// Where RFC 9112 (or 9110) states the rule.
    rule: &'static str,
    input: Vec<u8>,
    limits: Limits,
    expect: Expect,
}

const TE: &str = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";

fn row(name: &'static str, rule: &'static str, input: impl Into<Vec<u8>>, expect: Expect) -> Row {
    Row {
        name,
        rule,
        input: input.into(),
        limits: Limits::default(),
        expect,
    }
}

fn chunked(body: &str) -> Vec<u8> {
    format!("{TE}{body}").into_bytes()
}

fn rows() -> Vec<Row> {
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: h\r\n\r\n",
        "a".repeat(DEFAULT_MAX_REQUEST_LINE)
    );
    let mut big_head = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    while big_head.len() <= DEFAULT_MAX_HEAD {
        big_head.push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    big_head.push_str("\r\n");
    vec![
        row(
            "content_length_and_transfer_encoding_rejected",
            "§6.1, §6.3 item 3",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Rejected(ParseError::LengthAndTransferEncoding, 400),
        ),
        row(
            "differing_duplicate_content_lengths_rejected",
            "§6.3 item 5",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            Rejected(ParseError::DifferingContentLengths, 400),
        ),
        row(
            "differing_content_length_list_rejected",
            "§6.3 item 5",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\nabcd",
            Rejected(ParseError::DifferingContentLengths, 400),
        ),
        row(
            "identical_duplicate_content_lengths_accepted",
            "§6.3 item 5 (README: identical values are one length)",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc",
            Accepted {
                requests: 1,
                last_body: b"abc",
            },
        ),
        row(
            "non_decimal_content_length_rejected",
            "§6.3 item 5, RFC 9110 §8.6",
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
            Rejected(ParseError::InvalidContentLength, 400),
        ),
        row(
            "transfer_coding_other_than_chunked_rejected",
            "§6.3 item 4",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            Rejected(ParseError::InvalidTransferEncoding, 400),
        ),
        row(
            "chunked_not_final_coding_rejected",
            "§6.3 item 4",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            Rejected(ParseError::InvalidTransferEncoding, 400),
        ),
        row(
            "coding_before_chunked_not_implemented",
            "§6.1, RFC 9110 §15.6.2",
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Rejected(ParseError::UnsupportedTransferCoding, 501),
        ),
        row(
            "transfer_encoding_in_http10_rejected",
            "§6.1",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Rejected(ParseError::InvalidTransferEncoding, 400),
        ),
        row(
            "chunk_size_overflow_rejected",
            "§7.1",
            chunked("10000000000000000\r\n"),
            Rejected(ParseError::ChunkSizeOverflow, 400),
        ),
        row(
            "chunk_size_near_u64_max_is_too_large",
            "§7.1, max_body",
            chunked("ffffffffffffffff\r\n"),
            Rejected(ParseError::BodyTooLarge, 413),
        ),
        row(
            "chunk_extensions_ignored",
            "§7.1.1",
            chunked("5;a=b;c=\"d \\\"e\" ; f\r\nhello\r\n0;last=1\r\n\r\n"),
            Accepted {
                requests: 1,
                last_body: b"hello",
            },
        ),
        row(
            "malformed_chunk_extension_rejected",
            "§7.1.1",
            chunked("5;=b\r\nhello\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "trailer_fields_accepted",
            "§7.1.2",
            chunked("2\r\nhi\r\n0\r\nX-Checksum: 1\r\n\r\n"),
            Accepted {
                requests: 1,
                last_body: b"hi",
            },
        ),
        row(
            "chunk_data_without_crlf_rejected",
            "§7.1",
            chunked("3\r\nabcX\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunk, 400),
        ),
        row(
            "bare_lf_in_request_line_accepted",
            "§2.2",
            "GET /lf HTTP/1.1\nHost: h\r\n\r\n",
            Accepted {
                requests: 1,
                last_body: b"",
            },
        ),
        row(
            "bare_lf_in_header_fields_accepted",
            "§2.2",
            "GET /lf HTTP/1.1\r\nHost: h\nAccept: */*\n\n",
            Accepted {
                requests: 1,
                last_body: b"",
            },
        ),
        row(
            "bare_lf_in_chunk_size_line_rejected",
            "§7.1 (CRLF only in chunked framing)",
            chunked("2\nhi\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "bare_lf_after_chunk_data_rejected",
            "§7.1 (CRLF only in chunked framing)",
            chunked("2\r\nhi\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunk, 400),
        ),
        row(
            "bare_lf_in_trailer_rejected",
            "§7.1 (CRLF only in chunked framing)",
            chunked("0\r\nX: 1\n\r\n"),
            Rejected(ParseError::InvalidChunk, 400),
        ),
        row(
            "obs_fold_rejected",
            "§5.2",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  2\r\n\r\n",
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "whitespace_between_field_name_and_colon_rejected",
            "§5.1",
            "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "nul_in_field_value_rejected",
            "RFC 9110 §5.5",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n",
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "ctl_in_field_value_rejected",
            "RFC 9110 §5.5",
            "GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n",
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "ctl_in_field_name_rejected",
            "RFC 9110 §5.1",
            "GET / HTTP/1.1\r\nHost: h\r\nX\x01A: a\r\n\r\n",
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "missing_host_on_http11_rejected",
            "§3.2",
            "GET / HTTP/1.1\r\n\r\n",
            Rejected(ParseError::InvalidHost, 400),
        ),
        row(
            "duplicate_host_rejected",
            "§3.2",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            Rejected(ParseError::InvalidHost, 400),
        ),
        row(
            "missing_host_on_http10_accepted",
            "§3.2",
            "GET / HTTP/1.0\r\n\r\n",
            Accepted {
                requests: 1,
                last_body: b"",
            },
        ),
        row(
            "absolute_form_target_accepted",
            "§3.2.2",
            "GET http://example.com/x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
            Accepted {
                requests: 1,
                last_body: b"",
            },
        ),
        row(
            "asterisk_form_for_options_accepted",
            "§3.2.4",
            "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
            Accepted {
                requests: 1,
                last_body: b"",
            },
        ),
        row(
            "asterisk_form_for_other_methods_rejected",
            "§3.2.4",
            "GET * HTTP/1.1\r\nHost: h\r\n\r\n",
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "http09_request_rejected",
            "§2.3 (no HTTP/0.9)",
            "GET /\r\n\r\n",
            Rejected(ParseError::InvalidMethod, 400),
        ),
        row(
            "unknown_major_version_rejected",
            "§2.3, RFC 9110 §15.6.6",
            "GET / HTTP/2.0\r\nHost: h\r\n\r\n",
            Rejected(ParseError::UnsupportedVersion, 505),
        ),
        row(
            "http3_version_rejected",
            "§2.3, RFC 9110 §15.6.6",
            "GET / HTTP/3.1\r\nHost: h\r\n\r\n",
            Rejected(ParseError::UnsupportedVersion, 505),
        ),
        Row {
            name: "oversize_request_line_414",
            rule: "§3, RFC 9110 §15.5.15",
            input: long_line.into_bytes(),
            limits: Limits::default(),
            expect: Rejected(ParseError::RequestLineTooLong, 414),
        },
        Row {
            name: "oversize_head_431",
            rule: "RFC 6585 §5",
            input: big_head.into_bytes(),
            limits: Limits::default(),
            expect: Rejected(ParseError::HeadTooLarge, 431),
        },
        Row {
            name: "oversize_body_413",
            rule: "RFC 9110 §15.5.14",
            input: b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world".to_vec(),
            limits: Limits {
                max_body: 10,
                ..Limits::default()
            },
            expect: Rejected(ParseError::BodyTooLarge, 413),
        },
        row(
            "connect_not_implemented",
            "RFC 9110 §9.3.6 (not a proxy)",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
            Rejected(ParseError::MethodNotImplemented, 501),
        ),
        row(
            "leading_empty_lines_ignored",
            "§2.2",
            "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            Accepted {
                requests: 1,
                last_body: b"",
            },
        ),
    ]
}

/// Cut points to try for an input: every byte when short, a stride otherwise.
fn cut_points(len: usize) -> Vec<usize> {
    let stride = (len / 512).max(1);
    (1..len).step_by(stride).collect()
}

#[test]
fn rfc9112_table() {
    let mut failures = Vec::new();
    for r in rows() {
        let whole = feed(&r.input, &[], &r.limits);
        let ok = match (&r.expect, &whole) {
            (
                Accepted {
                    requests,
                    last_body,
                },
                Outcome {
                    requests: got,
                    error: None,
                },
            ) => got.len() == *requests && got.last().map(|q| &q.body[..]) == Some(*last_body),
            (Rejected(e, status), Outcome { requests, error }) => {
                requests.is_empty() && *error == Some(*e) && e.status() == *status
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} ({}): expected {:?}, got {:?}",
                r.name, r.rule, r.expect, whole
            ));
            continue;
        }
        for cut in cut_points(r.input.len()) {
            let split = feed(&r.input, &[cut], &r.limits);
            if split != whole {
                failures.push(format!("{}: cut at {cut} gives {split:?}", r.name));
                break;
            }
        }
        if r.input.len() <= fuzz_checks::BYTEWISE_MAX {
            let every: Vec<usize> = (1..r.input.len()).collect();
            if feed(&r.input, &every, &r.limits) != whole {
                failures.push(format!("{}: byte by byte differs", r.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rfc9112_table_names_are_unique() {
    let mut names: Vec<&str> = rows().iter().map(|r| r.name).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n);
}
