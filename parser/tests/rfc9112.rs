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
    /// One bodiless request framed, processed as HTTP/1.`minor`.
    Minor(u8),
    /// No request framed; this error, answered with this status.
    Err(ParseError, u16),
}

use Expect::{Err as Rejected, Minor, Ok as Accepted};

/// One bodiless request framed, and no error.
const ONE: Expect = Accepted {
    requests: 1,
    last_body: b"",
};

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

/// A request with this request line and `Host: h`.
fn line(request_line: &str) -> Vec<u8> {
    format!("{request_line}\r\nHost: h\r\n\r\n").into_bytes()
}

/// A GET for `/` with these header field lines (each ending in CRLF).
fn fields(lines: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\n{lines}\r\n").into_bytes()
}

/// A POST with `Host: h`, these further field lines, and this body.
fn post(lines: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: h\r\n{lines}\r\n{body}").into_bytes()
}

fn body(b: &'static [u8]) -> Expect {
    Accepted {
        requests: 1,
        last_body: b,
    }
}

fn rows() -> Vec<Row> {
    let mut rows = framing_rows();
    rows.extend(request_line_rows());
    rows.extend(host_rows());
    rows.extend(field_rows());
    rows.extend(chunked_rows());
    rows.extend(folded_rows());
    rows
}

/// The request line (§3): method, target, version, and what surrounds them.
fn request_line_rows() -> Vec<Row> {
    let long_method = "M".repeat(2048);
    let method_at_bound = "M".repeat(pyrs_parser::MAX_METHOD_LEN);
    let method_over_bound = "M".repeat(pyrs_parser::MAX_METHOD_LEN + 1);
    vec![
        row(
            "http12_processed_as_http11",
            "RFC 9110 §2.5",
            line("GET / HTTP/1.2"),
            Minor(1),
        ),
        row(
            "http19_processed_as_http11",
            "RFC 9110 §2.5",
            line("GET / HTTP/1.9"),
            Minor(1),
        ),
        row(
            "http12_without_host_rejected",
            "RFC 9110 §2.5, §3.2",
            "GET / HTTP/1.2\r\n\r\n",
            Rejected(ParseError::InvalidHost, 400),
        ),
        row(
            "http09_version_not_supported",
            "§2.3, RFC 9110 §15.6.6",
            line("GET / HTTP/0.9"),
            Rejected(ParseError::UnsupportedVersion, 505),
        ),
        row(
            "two_digit_version_rejected",
            "§2.3 (HTTP-version = HTTP-name \"/\" DIGIT \".\" DIGIT)",
            line("GET / HTTP/1.10"),
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "two_digit_major_version_rejected",
            "§2.3",
            line("GET / HTTP/11.1"),
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "version_without_minor_rejected",
            "§2.3",
            line("GET / HTTP/1"),
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "lowercase_http_name_rejected",
            "§2.3 (HTTP-name is case-sensitive)",
            line("GET / http/1.1"),
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "bare_cr_inside_version_rejected",
            "§2.2, HTTP Garden",
            "GET / HTTP/\r\r1.1\r\nHost: h\r\n\r\n",
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "bare_cr_after_version_rejected",
            "§2.2",
            "GET / HTTP/1.1\rHost: h\r\n\r\n",
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "space_after_version_rejected",
            "§3",
            line("GET / HTTP/1.1 "),
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "double_space_before_target_rejected",
            "§3 (single SP)",
            line("GET  / HTTP/1.1"),
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "tab_as_separator_rejected",
            "§3 (single SP)",
            line("GET\t/ HTTP/1.1"),
            Rejected(ParseError::InvalidMethod, 400),
        ),
        row(
            "lf_as_separator_rejected",
            "§3, HTTP Garden",
            "GET /\nHTTP/1.1\r\n\r\n",
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "bare_cr_before_request_line_rejected",
            "§2.2 (an empty line is CRLF)",
            "\rGET / HTTP/1.1\r\nHost: h\r\n\r\n",
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "over_long_method_not_implemented",
            "RFC 9110 §9.1, MAX_METHOD_LEN",
            line(&format!("{long_method} / HTTP/1.1")),
            Rejected(ParseError::MethodTooLong, 501),
        ),
        row(
            "method_one_over_the_bound_not_implemented",
            "RFC 9110 §9.1, MAX_METHOD_LEN",
            line(&format!("{method_over_bound} / HTTP/1.1")),
            Rejected(ParseError::MethodTooLong, 501),
        ),
        row(
            "method_at_the_bound_accepted",
            "RFC 9110 §9.1 (handlers may serve custom methods)",
            line(&format!("{method_at_bound} / HTTP/1.1")),
            ONE,
        ),
        row(
            "longest_registered_method_accepted",
            "RFC 9110 §16.1 (IANA registry)",
            line("UPDATEREDIRECTREF / HTTP/1.1"),
            ONE,
        ),
        row(
            "unknown_short_method_accepted",
            "RFC 9110 §9.1 (the router answers it)",
            line("BREW /pot HTTP/1.1"),
            ONE,
        ),
        row(
            "method_with_non_tchar_rejected",
            "RFC 9110 §9.1, HTTP Garden",
            line("G=\":<>(e),[T];?\" /get HTTP/1.1"),
            Rejected(ParseError::InvalidMethod, 400),
        ),
        row(
            "fragment_in_target_rejected",
            "§3.2 (origin-form has no fragment), RFC 9110 §7.1",
            line("GET /a?b#c HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "nul_in_target_rejected",
            "§3.2, RFC 3986 §3.3",
            line("GET /a\0b HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "bare_cr_in_target_rejected",
            "§2.2, §3.2",
            line("GET /a\rb HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "non_ascii_in_target_rejected",
            "§3.2, RFC 3986 §2 (URIs are ASCII)",
            line("GET /\u{3b4}\u{b6} HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "quote_in_target_rejected",
            "§3.2, RFC 3986 §3.3",
            line("GET /with_\"quotes\" HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "brace_in_query_rejected",
            "§3.2, RFC 3986 §3.4",
            line("GET /?q={} HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "backslash_in_target_rejected",
            "§3.2, RFC 3986 §3.3",
            line("GET /a\\b HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "brackets_in_origin_form_rejected",
            "§3.2.1, RFC 3986 §3.3",
            line("GET /[x] HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "bad_percent_encoding_rejected",
            "§3.2, RFC 3986 §2.1",
            line("GET /%zz HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "truncated_percent_encoding_rejected",
            "§3.2, RFC 3986 §2.1",
            line("GET /a%4 HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "target_not_starting_with_slash_rejected",
            "§3.2, HTTP Garden",
            line("GET ! HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "every_pchar_and_percent_encoding_accepted",
            "§3.2.1, RFC 3986 §3.3-3.4",
            line("GET /a-._~!$&'()*+,;=:@/%41%2f//?q=/?%20&r=:@ HTTP/1.1"),
            ONE,
        ),
        row(
            "absolute_form_without_host_rejected",
            "§3.2, §3.2.2",
            "GET http://example.com/ HTTP/1.1\r\n\r\n",
            Rejected(ParseError::InvalidHost, 400),
        ),
        row(
            "absolute_form_host_field_may_differ",
            "§3.2.2 (the server ignores Host for absolute-form)",
            "GET http://example.com/ HTTP/1.1\r\nHost: other.example\r\n\r\n",
            ONE,
        ),
        row(
            "absolute_form_ipv6_authority_accepted",
            "§3.2.2, RFC 3986 §3.2.2",
            "GET http://[::1]:8080/x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            ONE,
        ),
        row(
            "absolute_form_with_userinfo_rejected",
            "RFC 9110 §4.2.4",
            line("GET http://user:pw@example.com/ HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "absolute_form_with_empty_host_rejected",
            "RFC 9110 §4.2.1",
            line("GET http://:80/ HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "absolute_form_with_bad_port_rejected",
            "RFC 3986 §3.2.3",
            line("GET http://example.com:8x/ HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "absolute_form_brackets_in_path_rejected",
            "RFC 3986 §3.3",
            line("GET http://example.com/[x] HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
        row(
            "authority_form_for_other_methods_rejected",
            "§3.2.3 (CONNECT only)",
            line("GET example.com:80 HTTP/1.1"),
            Rejected(ParseError::InvalidTarget, 400),
        ),
    ]
}

/// The Host field (§3.2, RFC 9110 §7.2): `uri-host [ ":" port ]`.
fn host_rows() -> Vec<Row> {
    let bad = |name, rule, value: &str| {
        row(
            name,
            rule,
            fields(&format!("Host: {value}\r\n")),
            Rejected(ParseError::InvalidHostValue, 400),
        )
    };
    let good =
        |name, rule, value: &str| row(name, rule, fields(&format!("Host: {value}\r\n")), ONE);
    vec![
        bad("host_with_userinfo_rejected", "§3.2, RFC 9110 §4.2.4", "user@example.com"),
        bad("host_with_space_rejected", "§3.2, RFC 3986 §3.2.2", "example .com"),
        bad("host_with_tab_rejected", "§3.2, RFC 3986 §3.2.2", "not\ta valid host"),
        bad("host_with_path_rejected", "§3.2, RFC 3986 §3.2.2", "example.com/x"),
        bad("host_with_query_rejected", "§3.2, RFC 3986 §3.2.2", "example.com?x"),
        bad("host_with_fragment_rejected", "§3.2, RFC 3986 §3.2.2", "example.com#x"),
        bad("host_with_non_digit_port_rejected", "§3.2, RFC 3986 §3.2.3", "example.com:8x"),
        bad("host_with_two_ports_rejected", "§3.2, RFC 3986 §3.2.3", "example.com:80:80"),
        bad("host_with_bad_ipv6_rejected", "RFC 3986 §3.2.2", "[::g]"),
        bad("host_with_unclosed_ipv6_rejected", "RFC 3986 §3.2.2", "[::1"),
        bad("host_with_bare_ipv6_rejected", "RFC 3986 §3.2.2", "::1"),
        bad("host_with_bad_pct_encoding_rejected", "RFC 3986 §2.1", "ex%zzample"),
        bad("host_with_non_ascii_rejected", "RFC 3986 §3.2.2", "b\u{fc}cher.example"),
        good("host_reg_name_with_port_accepted", "§3.2", "example.com:8080"),
        good("host_ipv4_accepted", "RFC 3986 §3.2.2", "127.0.0.1:80"),
        good("host_ipv6_literal_accepted", "RFC 3986 §3.2.2", "[::1]:8080"),
        good("host_ipv6_with_ipv4_tail_accepted", "RFC 3986 §3.2.2", "[::ffff:127.0.0.1]"),
        good("host_ipvfuture_accepted", "RFC 3986 §3.2.2", "[v1.fe80::a+en1]"),
        good("host_with_empty_port_accepted", "RFC 3986 §3.2.3 (port = *DIGIT)", "example.com:"),
        good(
            "host_with_sub_delims_and_pct_encoding_accepted",
            "RFC 3986 §3.2.2 (reg-name)",
            "a-b.c_d~!$&'()*+,;=%41",
        ),
        good(
            "empty_host_accepted",
            "§3.2 (\"a client MUST send a Host header field with an empty field value\" when the target URI has no authority)",
            "",
        ),
        row(
            "invalid_host_on_http10_rejected",
            "§3.2 (any request with an invalid Host)",
            "GET / HTTP/1.0\r\nHost: a b\r\n\r\n",
            Rejected(ParseError::InvalidHostValue, 400),
        ),
        row(
            "absolute_form_with_invalid_host_field_rejected",
            "§3.2 (invalid Host is a 400 whatever the target)",
            "GET http://example.com/ HTTP/1.1\r\nHost: a@b\r\n\r\n",
            Rejected(ParseError::InvalidHostValue, 400),
        ),
    ]
}

/// Field lines (§5) and the framing fields (§6).
fn field_rows() -> Vec<Row> {
    vec![
        row(
            "bare_cr_in_field_value_rejected",
            "§2.2, HTTP Garden",
            fields("Host: h\r\nX: va\rlue\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "bare_cr_as_field_line_end_rejected",
            "§2.2, llhttp, HTTP Garden",
            fields("Host: h\r\nFoo: 1\rBar: 2\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "bare_cr_after_field_section_rejected",
            "§2.2, HTTP Garden",
            "GET / HTTP/1.1\r\nHost: h\r\n\rZGET /evil: HTTP/1.1\r\nHost: h\r\n\r\n",
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "whitespace_before_first_field_rejected",
            "§2.2, HTTP Garden",
            fields("\tContent-Length: 1\r\nHost: h\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "non_tchar_in_field_name_rejected",
            "RFC 9110 §5.1",
            fields("Host: h\r\nFo@: x\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "non_ascii_in_field_name_rejected",
            "RFC 9110 §5.1, HTTP Garden",
            fields("Host: h\r\n\u{ef}oo: bar\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "non_ascii_before_colon_rejected",
            "RFC 9110 §5.1, HTTP Garden",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length\x85: 1\r\n\r\nZ".to_vec(),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "cr_inside_field_name_rejected",
            "RFC 9110 §5.1, llhttp",
            post("Content\rLength: 3\r\n", "abc"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "field_name_split_across_lines_rejected",
            "§5.1, HTTP Garden",
            post("Transfer-\r\nEncoding: chunked\r\n", "0\r\n\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "empty_field_name_rejected",
            "RFC 9110 §5.1, HTTP Garden",
            fields(": ignored\r\nHost: h\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "field_line_without_colon_rejected",
            "§5.1, HTTP Garden",
            fields("Host: h\r\nContent-Length 10\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "del_in_field_value_rejected",
            "RFC 9110 §5.5",
            fields("Host: h\r\nX: a\x7fb\r\n"),
            Rejected(ParseError::InvalidHeader, 400),
        ),
        row(
            "obs_text_in_field_value_accepted",
            "RFC 9110 §5.5 (field-vchar includes obs-text)",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9\r\n\r\n".to_vec(),
            ONE,
        ),
        row(
            "content_length_with_leading_zeros_accepted",
            "RFC 9110 §8.6 (1*DIGIT)",
            post(&format!("Content-Length: {}3\r\n", "0".repeat(30)), "abc"),
            body(b"abc"),
        ),
        row(
            "content_length_with_trailing_whitespace_accepted",
            "§5.1 (OWS around the value is not part of it)",
            post("Content-Length: 3 \t\r\n", "abc"),
            body(b"abc"),
        ),
        row(
            "chunked_with_empty_list_elements_accepted",
            "RFC 9110 §5.6.1 (empty list elements are ignored)",
            post("Transfer-Encoding: ,chunked,\r\n", "2\r\nhi\r\n0\r\n\r\n"),
            body(b"hi"),
        ),
        row(
            "chunked_coding_name_is_case_insensitive",
            "RFC 9112 §7",
            post("Transfer-Encoding: CHUNKED\r\n", "2\r\nhi\r\n0\r\n\r\n"),
            body(b"hi"),
        ),
        row(
            "chunked_twice_rejected",
            "§6.1 (chunked at most once), HTTP Garden",
            post(
                "Transfer-Encoding: chunked, chunked\r\n",
                "1\r\nZ\r\n0\r\n\r\n",
            ),
            Rejected(ParseError::InvalidTransferEncoding, 400),
        ),
        row(
            "chunked_in_two_fields_rejected",
            "§6.1 (chunked at most once), HTTP Garden",
            post(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "1\r\nZ\r\n0\r\n\r\n",
            ),
            Rejected(ParseError::InvalidTransferEncoding, 400),
        ),
        row(
            "empty_transfer_encoding_rejected",
            "§6.1, llhttp",
            post("Transfer-Encoding:\r\nContent-Length: 5\r\n", "hello"),
            Rejected(ParseError::LengthAndTransferEncoding, 400),
        ),
        row(
            "quoted_chunked_rejected",
            "§6.1 (a coding is a token)",
            post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n"),
            Rejected(ParseError::InvalidTransferEncoding, 400),
        ),
        row(
            "obs_text_around_chunked_rejected",
            "RFC 9110 §5.6.2, HTTP Garden",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \xa0chunked\xa0\r\n\r\n0\r\n\r\n"
                .to_vec(),
            Rejected(ParseError::InvalidTransferEncoding, 400),
        ),
        row(
            "chunkedchunked_rejected",
            "§6.1, llhttp",
            post("Transfer-Encoding: chunkedchunked\r\n", "0\r\n\r\n"),
            Rejected(ParseError::InvalidTransferEncoding, 400),
        ),
    ]
}

/// The chunked coding (§7.1) beyond the basic rows.
fn chunked_rows() -> Vec<Row> {
    let zeros = "0".repeat(pyrs_parser::MAX_CHUNK_LINE);
    vec![
        row(
            "chunk_size_line_over_the_bound_rejected",
            "§7.1.1 (a server ought to limit chunk lines), MAX_CHUNK_LINE",
            chunked(&format!("{zeros}2\r\nhi\r\n0\r\n\r\n")),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "chunk_size_with_leading_zeros_accepted",
            "§7.1 (chunk-size = 1*HEXDIG)",
            chunked("0002\r\nhi\r\n000\r\n\r\n"),
            body(b"hi"),
        ),
        row(
            "chunk_size_with_0x_prefix_rejected",
            "§7.1, HTTP Garden",
            chunked("0x2\r\nhi\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "chunk_size_with_underscore_rejected",
            "§7.1, HTTP Garden",
            chunked("0_2e\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "empty_chunk_size_rejected",
            "§7.1, HTTP Garden",
            chunked("\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "missing_last_chunk_rejected",
            "§7.1, llhttp",
            chunked("3\r\nfoo\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "space_after_chunk_size_rejected",
            "§7.1, llhttp",
            chunked("2 \r\nhi\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "bare_cr_in_chunk_size_line_rejected",
            "§7.1, HTTP Garden",
            chunked("5\r\r;ABCD\r\n34\r\nE\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "bare_cr_in_chunk_extension_rejected",
            "§7.1.1, HTTP Garden",
            chunked("2;a=b\r\rXX\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "bare_cr_in_quoted_chunk_extension_rejected",
            "§7.1.1",
            chunked("2;a=\"x\ry\"\r\nhi\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "unbalanced_quote_in_chunk_extension_rejected",
            "§7.1.1, llhttp",
            chunked("2;a=\"abc\r\nhi\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "quoted_chunk_extension_with_escapes_accepted",
            "§7.1.1, llhttp",
            chunked("2;a=\"I \\\"love\\\"; \\\\ext\\\\\";b=\"c\";d;e=f\r\nhi\r\n0\r\n\r\n"),
            body(b"hi"),
        ),
        row(
            "whitespace_after_last_chunk_extension_rejected",
            "§7.1.1 (BWS only before \";\" and around \"=\")",
            chunked("2;a=b \r\nhi\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "whitespace_after_chunk_extension_name_rejected",
            "§7.1.1",
            chunked("2;a\t\r\nhi\r\n0\r\n\r\n"),
            Rejected(ParseError::InvalidChunkSize, 400),
        ),
        row(
            "whitespace_around_chunk_extension_separators_accepted",
            "§7.1.1 (BWS)",
            chunked("2 ; a = b ;c= \"d\"\r\nhi\r\n0\r\n\r\n"),
            body(b"hi"),
        ),
        row(
            "framing_fields_in_trailer_ignored",
            "RFC 9110 §6.5.1 (trailers cannot frame the message)",
            format!(
                "{TE}2\r\nhi\r\n0\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"
            ),
            Accepted {
                requests: 2,
                last_body: b"",
            },
        ),
        row(
            "trailer_without_space_after_colon_ends_at_empty_line",
            "§7.1.2, HTTP Garden",
            chunked("0\r\nX:POST / HTTP/1.1\r\n\r\n"),
            body(b""),
        ),
        row(
            "obs_fold_in_trailer_rejected",
            "§5.2, §7.1.2",
            chunked("0\r\nX: 1\r\n 2\r\n\r\n"),
            Rejected(ParseError::InvalidChunk, 400),
        ),
    ]
}

/// Rows that were unit tests in parser/src/tests.rs: one place for each rule.
fn folded_rows() -> Vec<Row> {
    let mut many_fields = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
    for i in 0..pyrs_parser::MAX_HEADERS {
        many_fields.push_str(&format!("X-{i}: v\r\n"));
    }
    many_fields.push_str("\r\n");
    let mut rows = vec![
        row(
            "identical_content_length_fields_accepted",
            "§6.3 item 5",
            post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
            body(b"abc"),
        ),
        row(
            "identical_content_length_list_accepted",
            "§6.3 item 5",
            post("Content-Length: 3, 3\r\n", "abc"),
            body(b"abc"),
        ),
        row(
            "coding_before_chunked_in_one_field_not_implemented",
            "§6.1, RFC 9110 §15.6.2",
            post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            Rejected(ParseError::UnsupportedTransferCoding, 501),
        ),
        Row {
            name: "chunked_body_over_limit_413",
            rule: "RFC 9110 §15.5.14",
            input: chunked("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            limits: Limits {
                max_body: 4,
                ..Limits::default()
            },
            expect: Rejected(ParseError::BodyTooLarge, 413),
        },
        row(
            "bare_lf_for_every_head_line_accepted",
            "§2.2",
            "GET /lf HTTP/1.1\nHost: h\n\n",
            ONE,
        ),
        row(
            "space_inside_target_rejected",
            "§3.2 (no whitespace in the target)",
            line("GET /te xt HTTP/1.1"),
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "text_after_version_rejected",
            "§3",
            line("GET / HTTP/1.1 extra"),
            Rejected(ParseError::InvalidRequestLine, 400),
        ),
        row(
            "too_many_fields_431",
            "RFC 6585 §5, MAX_HEADERS",
            many_fields,
            Rejected(ParseError::TooManyHeaders, 431),
        ),
    ];
    // RFC 9110 §8.6; the empty value, `+`, `-`, `0x`, `_` and trailing bytes
    // are HTTP Garden's smuggling finds in other servers.
    for (name, value) in [
        ("empty_content_length_rejected", ""),
        ("content_length_with_empty_list_element_rejected", "3,"),
        ("content_length_with_trailing_garbage_rejected", "1Z"),
        ("content_length_with_underscore_rejected", "1_0"),
        ("negative_content_length_rejected", "-3"),
        ("hex_content_length_rejected", "0x3"),
        ("content_length_with_inner_space_rejected", "3 3"),
        (
            "content_length_over_64_bits_rejected",
            "99999999999999999999",
        ),
    ] {
        rows.push(row(
            name,
            "RFC 9110 §8.6 (1*DIGIT)",
            post(&format!("Content-Length: {value}\r\n"), "abc"),
            Rejected(ParseError::InvalidContentLength, 400),
        ));
    }
    for (name, size) in [
        ("non_hex_chunk_size_rejected", "x"),
        ("negative_chunk_size_rejected", "-1"),
        ("space_before_chunk_size_rejected", " 1"),
        ("chunk_size_with_trailing_text_rejected", "1 x"),
        ("chunk_size_with_plus_sign_rejected", "+1"),
    ] {
        rows.push(row(
            name,
            "§7.1 (chunk-size = 1*HEXDIG)",
            chunked(&format!("{size}\r\na\r\n0\r\n\r\n")),
            Rejected(ParseError::InvalidChunkSize, 400),
        ));
    }
    rows
}

/// The framing rules the table started with (§2, §3, §6, §7).
fn framing_rows() -> Vec<Row> {
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
            Rejected(ParseError::InvalidRequestLine, 400),
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

/// An outcome in one line: each request as `METHOD target HTTP/1.x (n body
/// bytes)`, long parts shortened, then the error.
fn summary(o: &Outcome) -> String {
    let short = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        match s.char_indices().nth(40) {
            Some((i, _)) => format!("{}...", &s[..i]),
            None => s.into_owned(),
        }
    };
    let requests: Vec<String> = o
        .requests
        .iter()
        .map(|q| {
            format!(
                "{} {} HTTP/1.{} ({} body bytes)",
                short(&q.method),
                short(&q.target),
                q.minor,
                q.body.len()
            )
        })
        .collect();
    format!("requests [{}], error {:?}", requests.join("; "), o.error)
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
            (
                Minor(minor),
                Outcome {
                    requests: got,
                    error: None,
                },
            ) => got.len() == 1 && got[0].minor == *minor && got[0].body.is_empty(),
            (Rejected(e, status), Outcome { requests, error }) => {
                requests.is_empty() && *error == Some(*e) && e.status() == *status
            }
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} ({}): expected {:?}, got {}",
                r.name,
                r.rule,
                r.expect,
                summary(&whole)
            ));
            continue;
        }
        for cut in cut_points(r.input.len()) {
            let split = feed(&r.input, &[cut], &r.limits);
            if split != whole {
                failures.push(format!(
                    "{}: cut at {cut} gives {}",
                    r.name,
                    summary(&split)
                ));
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
