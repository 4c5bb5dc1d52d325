//! The project file read as a stream of JSON values, one token at a time.
//! jsonc-parser's scanner turns the text into tokens with byte ranges
//! (comments are skipped, strings come back decoded); this module adds the
//! grammar (objects, arrays, commas, trailing commas allowed) and turns byte
//! offsets into [`Location`]s. Nothing is parsed ahead of the reader: the
//! caller checks each key and value as it is met, so the first problem in the
//! text is the one reported, in the words serde_json uses ("expected `,` or
//! `}`", "EOF while parsing an object").

use std::borrow::Cow;
use std::path::Path;

use jsonc_parser::errors::{ParseError, ParseErrorKind};
use jsonc_parser::tokens::Token;
use jsonc_parser::{ParseStringErrorKind, Scanner, ScannerOptions};

use super::{ConfigError, Location};

/// What a value starts with. For an object or an array only the opening
/// bracket has been read; the caller goes on with [`Json::key`] or
/// [`Json::element`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value<'a> {
    Object,
    Array,
    String(Cow<'a, str>),
    Bool(bool),
    Null,
    /// A number as written (`8000`, `2.5`, `-1e3`).
    Number(&'a str),
}

impl Value<'_> {
    /// What this value is, for "expected X, found Y".
    pub(super) fn describe(&self) -> String {
        match self {
            Value::Object => "an object".to_owned(),
            Value::Array => "an array".to_owned(),
            Value::String(_) => "a string".to_owned(),
            Value::Bool(_) => "a boolean".to_owned(),
            Value::Null => "null".to_owned(),
            Value::Number(raw) if is_integer(raw) => format!("the integer {raw}"),
            Value::Number(raw) => format!("the number {raw}"),
        }
    }
}

/// True for a number written without a fraction or an exponent.
pub(super) fn is_integer(raw: &str) -> bool {
    !raw.contains(['.', 'e', 'E'])
}

/// A value and where it starts.
#[derive(Debug)]
pub(super) struct Spanned<'a> {
    pub(super) value: Value<'a>,
    pub(super) at: Location,
}

/// What the grammar accepts at some point of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Value,
    /// A value or the `]` of an array.
    Element,
    /// A key or the `}` of an object.
    Key,
    Colon,
    /// `,` or `}` after a member's value.
    ObjectComma,
    /// `,` or `]` after an element.
    ArrayComma,
    /// Nothing after the whole file's value.
    End,
}

impl Want {
    /// The message for something else in that place.
    fn unexpected(self) -> &'static str {
        match self {
            Want::Value | Want::Element => "expected value",
            Want::Key => "key must be a string",
            Want::Colon => "expected `:`",
            Want::ObjectComma => "expected `,` or `}`",
            Want::ArrayComma => "expected `,` or `]`",
            Want::End => "trailing characters",
        }
    }

    /// The message for the end of the text in that place.
    fn eof(self) -> &'static str {
        match self {
            Want::Value | Want::End => "EOF while parsing a value",
            Want::Element | Want::ArrayComma => "EOF while parsing a list",
            Want::Key | Want::Colon | Want::ObjectComma => "EOF while parsing an object",
        }
    }

    /// True where a value, so any token, may start.
    fn takes_value(self) -> bool {
        matches!(self, Want::Value | Want::Element)
    }
}

/// A pull reader over the text of one project file.
pub(super) struct Json<'a> {
    file: &'a Path,
    text: &'a str,
    scanner: Scanner<'a>,
    /// A token read by [`Json::element`] to look for `]`, with its offset.
    peeked: Option<(Token<'a>, usize)>,
    /// Byte offset where each line starts, for [`Json::location`].
    line_starts: Vec<usize>,
    /// True once a whole value has been read in the innermost open object or
    /// array, so a `,` or its closing bracket comes next.
    after_value: bool,
}

/// Strict JSON tokens; only comments (and trailing commas, in the grammar
/// below) are added.
const STRICT: ScannerOptions = ScannerOptions {
    allow_single_quoted_strings: false,
    allow_hexadecimal_numbers: false,
    allow_unary_plus_numbers: false,
    allow_bare_decimal_point_numbers: false,
    allow_non_finite_numbers: false,
    allow_extended_string_escapes: false,
};

impl<'a> Json<'a> {
    pub(super) fn new(text: &'a str, file: &'a Path) -> Json<'a> {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        Json {
            file,
            text,
            scanner: Scanner::new(text, &STRICT),
            peeked: None,
            line_starts,
            after_value: false,
        }
    }

    /// The line and column of a byte offset; columns count characters.
    pub(super) fn location(&self, offset: usize) -> Location {
        let line = self.line_starts.partition_point(|start| *start <= offset);
        let start = self.line_starts[line - 1];
        Location {
            line,
            column: self.text[start..offset].chars().count() + 1,
        }
    }

    /// Where an "EOF while ..." error points: at the last character of the
    /// file, or column 1 of a final empty line.
    fn end(&self) -> Location {
        let end = self.location(self.text.len());
        Location {
            line: end.line,
            column: (end.column - 1).max(1),
        }
    }

    pub(super) fn syntax(&self, location: Location, message: &str) -> ConfigError {
        ConfigError::Syntax {
            file: self.file.to_path_buf(),
            location,
            message: message.to_owned(),
        }
    }

    /// A syntax error at the character at `offset`; one at a line break
    /// points at the start of the next line.
    fn syntax_at(&self, offset: usize, message: &str) -> ConfigError {
        let offset = match self.text.as_bytes().get(offset) {
            Some(b'\n') => offset + 1,
            _ => offset,
        };
        self.syntax(self.location(offset), message)
    }

    fn eof(&self, message: &str) -> ConfigError {
        self.syntax(self.end(), message)
    }

    /// The next token that is not a comment, with its start offset; `None`
    /// at the end of the text. `want` is what the grammar accepts here, for
    /// the message when the text holds something else.
    fn next(&mut self, want: Want) -> Result<Option<(Token<'a>, usize)>, ConfigError> {
        if let Some(peeked) = self.peeked.take() {
            return Ok(Some(peeked));
        }
        loop {
            match self.scanner.scan() {
                Ok(Some(Token::CommentLine(_) | Token::CommentBlock(_))) => {}
                Ok(Some(token)) => {
                    let start = self.scanner.token_start();
                    // The scanner lets raw line breaks and tabs into strings; JSON
                    // does not. (Where no string may stand, the caller reports
                    // the token itself.)
                    if matches!(token, Token::String(_))
                        && (want.takes_value() || want == Want::Key)
                    {
                        let end = self.scanner.token_end();
                        if let Some(at) = self.control_character(start, end) {
                            return Err(self.control_character_error(at));
                        }
                    }
                    return Ok(Some((token, start)));
                }
                Ok(None) => return Ok(None),
                Err(err) => return Err(self.scan_error(&err, want)),
            }
        }
    }

    /// A token the scanner refused, in the words used for every other
    /// syntax error.
    fn scan_error(&self, err: &ParseError, want: Want) -> ConfigError {
        // The refused token starts here; `err` may point inside it.
        let start = self.scanner.token_start();
        let rest = &self.text[start..];
        match err.kind() {
            ParseErrorKind::UnterminatedCommentBlock => {
                return self.eof("EOF while parsing a block comment")
            }
            ParseErrorKind::UnexpectedToken if rest.starts_with('/') => {
                const NO_COMMENT: &str = "expected `/` or `*` after `/`";
                return match start + 1 < self.text.len() {
                    true => self.syntax_at(start + 1, NO_COMMENT),
                    false => self.eof(NO_COMMENT),
                };
            }
            _ => {}
        }
        // Only a value or a key can start with what the scanner refused.
        let key = want == Want::Key && rest.starts_with('"');
        if !want.takes_value() && !key {
            return self.unexpected(start, want);
        }
        let at = err.range().start;
        match err.kind() {
            ParseErrorKind::String(kind) => {
                let end = err.range().end.max(at);
                if let Some(at) = self.control_character(start, end) {
                    return self.control_character_error(at);
                }
                match kind {
                    ParseStringErrorKind::UnterminatedStringLiteral => {
                        self.eof("EOF while parsing a string")
                    }
                    ParseStringErrorKind::InvalidUnicodeEscapeSequence(_) => {
                        self.syntax_at(at, "invalid unicode code point")
                    }
                    // At the character after the backslash.
                    _ => self.syntax_at(at + 1, "invalid escape"),
                }
            }
            ParseErrorKind::ExpectedDigit
            | ParseErrorKind::ExpectedDigitFollowingNegativeSign
            | ParseErrorKind::ExpectedPlusMinusOrDigitInNumberLiteral
            | ParseErrorKind::BareDecimalPointNumbersNotAllowed
            | ParseErrorKind::HexadecimalNumbersNotAllowed
            | ParseErrorKind::NonFiniteNumbersNotAllowed
                if !rest.starts_with(['.', '+']) =>
            {
                // Where the scanner stopped: the character that is wrong.
                self.syntax_at(self.scanner.token_end(), "invalid number")
            }
            _ => self.unexpected_word(start),
        }
    }

    /// Text in a value's place that is no value: a misspelt `true`, `false`
    /// or `null` is reported at its first wrong letter.
    fn unexpected_word(&self, start: usize) -> ConfigError {
        let rest = &self.text[start..];
        let Some(word) = ["true", "false", "null"]
            .into_iter()
            .find(|word| rest.starts_with(&word[..1]))
        else {
            return self.unexpected(start, Want::Value);
        };
        let matched = rest
            .bytes()
            .zip(word.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        if start + matched >= self.text.len() {
            return self.eof(Want::Value.eof());
        }
        self.syntax_at(start + matched, "expected ident")
    }

    /// The first control character in `text[start..end]`, which JSON
    /// strings must escape.
    fn control_character(&self, start: usize, end: usize) -> Option<usize> {
        let end = end.min(self.text.len());
        self.text.as_bytes()[start..end]
            .iter()
            .position(|b| *b < 0x20)
            .map(|at| start + at)
    }

    fn control_character_error(&self, at: usize) -> ConfigError {
        self.syntax_at(
            at,
            "control character (\\u0000-\\u001F) found while parsing a string",
        )
    }

    /// The next token, which must be there.
    fn expect(&mut self, want: Want) -> Result<(Token<'a>, usize), ConfigError> {
        self.next(want)?.ok_or_else(|| self.eof(want.eof()))
    }

    fn unexpected(&self, start: usize, want: Want) -> ConfigError {
        self.syntax_at(start, want.unexpected())
    }

    /// Reads the start of a value: all of a scalar, the bracket of an object
    /// or an array.
    pub(super) fn value(&mut self) -> Result<Spanned<'a>, ConfigError> {
        let (token, start) = self.expect(Want::Value)?;
        let value = match token {
            Token::OpenBrace => Value::Object,
            Token::OpenBracket => Value::Array,
            Token::String(text) => Value::String(text),
            Token::Boolean(flag) => Value::Bool(flag),
            Token::Null => Value::Null,
            Token::Number(raw) => {
                let end = self.scanner.token_end();
                if self.text[end..].starts_with(|c: char| c.is_ascii_digit()) {
                    // A leading zero: `01`.
                    return Err(self.syntax_at(end, "invalid number"));
                }
                if raw.parse::<f64>().is_ok_and(f64::is_infinite) {
                    return Err(self.syntax_at(end - 1, "number out of range"));
                }
                Value::Number(raw)
            }
            Token::Word(_) => return Err(self.unexpected_word(start)),
            _ => return Err(self.unexpected(start, Want::Value)),
        };
        self.after_value = !matches!(value, Value::Object | Value::Array);
        Ok(Spanned {
            value,
            at: self.location(start),
        })
    }

    /// The next key of the object being read, and where it is; `None` at its
    /// `}`. The caller reads the `:` with [`Json::colon`], then the value.
    pub(super) fn key(&mut self) -> Result<Option<(String, Location)>, ConfigError> {
        if self.after_value && !self.comma(Want::ObjectComma)? {
            return Ok(None);
        }
        match self.expect(Want::Key)? {
            (Token::String(key), start) => {
                self.after_value = false;
                Ok(Some((key.into_owned(), self.location(start))))
            }
            (Token::CloseBrace, _) => {
                self.after_value = true;
                Ok(None)
            }
            (_, start) => Err(self.unexpected(start, Want::Key)),
        }
    }

    /// What follows a value in an object or an array (`want` says which):
    /// true after a `,`, false after the closing bracket.
    fn comma(&mut self, want: Want) -> Result<bool, ConfigError> {
        match (self.expect(want)?, want) {
            ((Token::Comma, _), _) => Ok(true),
            ((Token::CloseBrace, _), Want::ObjectComma)
            | ((Token::CloseBracket, _), Want::ArrayComma) => Ok(false),
            ((_, start), _) => Err(self.unexpected(start, want)),
        }
    }

    /// The `:` between a key and its value.
    pub(super) fn colon(&mut self) -> Result<(), ConfigError> {
        match self.expect(Want::Colon)? {
            (Token::Colon, _) => Ok(()),
            (_, start) => Err(self.unexpected(start, Want::Colon)),
        }
    }

    /// The start of the next element of the array being read; `None` at its
    /// `]`.
    pub(super) fn element(&mut self) -> Result<Option<Spanned<'a>>, ConfigError> {
        if self.after_value && !self.comma(Want::ArrayComma)? {
            return Ok(None);
        }
        match self.expect(Want::Element)? {
            (Token::CloseBracket, _) => {
                self.after_value = true;
                Ok(None)
            }
            token => {
                self.peeked = Some(token);
                self.value().map(Some)
            }
        }
    }

    /// Checks that nothing but comments follows the value just read.
    pub(super) fn finish(&mut self) -> Result<(), ConfigError> {
        match self.next(Want::End)? {
            Some((_, start)) => Err(self.unexpected(start, Want::End)),
            None => Ok(()),
        }
    }
}
