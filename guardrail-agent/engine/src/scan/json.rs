//! The scanner's JSON primitives: a cursor over one line that reads keys,
//! strings, numbers and literals in place and skips values of keys it does
//! not know, accepting only what serde_json would accept with the same
//! meaning.
//!
//! Every primitive answers [`Bail`] on anything else: bailing is always
//! correct (the caller hands the line to serde_json), accepting is correct
//! only if serde agrees, which the tests below check against serde_json
//! itself. So where serde's answer depends on more than the bytes at hand
//! (a lone surrogate is an error in a `String` but not in an ignored
//! value; `-0` is a float to serde_json), the cursor bails.

use std::borrow::Cow;

use memchr::memchr2;

/// "Let serde decide": not a verdict that the line is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

/// How deep [`Cursor::skip_value`] follows nested arrays and objects.
/// serde_json stops at 128, so whatever the scanner walks, serde would.
pub const MAX_DEPTH: u32 = 64;

/// What one pass over a line found out, before any JSON is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pre<'a> {
    /// UTF-8 without control bytes: what the agent writes, and all a
    /// [`Cursor`] needs to know.
    Clean(Clean<'a>),
    /// UTF-8 with a control byte: a tab or CR between tokens, which serde
    /// skips, or one inside a string, which serde rejects. Serde decides.
    Unusual(&'a str),
    /// Not UTF-8: the serde reader skips such lines unread.
    NotUtf8,
}

/// A line [`precheck`] found clean. Only `precheck` makes one, so a
/// cursor never meets a raw control byte inside a string: serde rejects
/// those, and the cursor's string search looks only for `"` and `\`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clean<'a>(&'a str);

impl<'a> Clean<'a> {
    pub fn as_str(self) -> &'a str {
        self.0
    }
}

/// Sorts a line in one pass. A single trailing `\r` is dropped first, so
/// CRLF logs stay clean: to serde it is whitespace after the object.
pub fn precheck(line: &[u8]) -> Pre<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Eight bytes at a time: `any` collects the high bits (not ASCII), and
    // `(x - 0x20…) & !x` sets a byte's high bit only if some byte of `x`
    // is below 0x20 (borrows start only there) — the classic `hasless`.
    const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    let (words, tail) = line.as_chunks::<8>();
    let mut last = [b' '; 8];
    last[..tail.len()].copy_from_slice(tail);
    let (mut any, mut below) = (0u64, 0u64);
    for word in words.iter().chain([&last]) {
        let x = u64::from_ne_bytes(*word);
        any |= x;
        below |= x.wrapping_sub(SPACES) & !x;
    }
    let (ascii, controls) = (any & HIGH_BITS == 0, below & HIGH_BITS != 0);
    let text = if ascii {
        // SAFETY: every byte is below 0x80, and ASCII is UTF-8.
        unsafe { std::str::from_utf8_unchecked(line) }
    } else {
        match std::str::from_utf8(line) {
            Ok(text) => text,
            Err(_) => return Pre::NotUtf8,
        }
    };
    if controls {
        Pre::Unusual(text)
    } else {
        Pre::Clean(Clean(text))
    }
}

/// A position in a clean line. Every reading method first skips the
/// spaces before its token (the only whitespace a clean line can hold)
/// and leaves the cursor right after the token; on [`Bail`] the position
/// is unspecified, since the caller abandons the line.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(line: Clean<'a>) -> Cursor<'a> {
        Cursor {
            text: line.0,
            at: 0,
        }
    }

    /// The byte offset of the next unread byte.
    pub fn position(&self) -> usize {
        self.at
    }

    /// The whole line.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Passes over `n` bytes another reading of the same bytes checked
    /// (a memo's), which must end on a char boundary.
    pub fn pass(&mut self, n: usize) {
        self.at += n;
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    pub fn ws(&mut self) {
        self.at = spaces(self.bytes(), self.at);
    }

    /// The first byte of the next token, not consumed.
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes().get(self.at).copied()
    }

    /// True if only spaces remain (serde's check after the last value).
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    pub fn expect(&mut self, byte: u8) -> Result<(), Bail> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(Bail)
        }
    }

    /// Opens an array or object (`open` is `[` or `{`); true if it holds
    /// anything, false if it was empty and is now closed too.
    pub fn begin(&mut self, open: u8, close: u8) -> Result<bool, Bail> {
        self.expect(open)?;
        if self.peek() == Some(close) {
            self.at += 1;
            return Ok(false);
        }
        Ok(true)
    }

    /// After an item: true if a `,` announces another, false if `close`
    /// ended the container. A trailing comma bails at the next item.
    pub fn more(&mut self, close: u8) -> Result<bool, Bail> {
        match self.peek() {
            Some(b',') => {
                self.at += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.at += 1;
                Ok(false)
            }
            _ => Err(Bail),
        }
    }

    /// An object's key and its `:`. An escaped key bails: serde decodes
    /// it (`"se\u0071"` is `seq`), and comparing raw bytes would not.
    pub fn key(&mut self) -> Result<&'a [u8], Bail> {
        self.expect(b'"')?;
        let (start, bytes) = (self.at, self.bytes());
        let end = quote_or_backslash(bytes, start)?;
        if bytes[end] != b'"' {
            return Err(Bail);
        }
        self.at = end + 1;
        self.expect(b':')?;
        Ok(&bytes[start..end])
    }

    /// If the next key is `key` as the agent writes it — no escape, no
    /// space before its colon — reads it and its colon. Most keys come in
    /// the order the writer puts them: this one comparison replaces
    /// finding the key's end, then looking it up.
    pub fn key_is(&mut self, key: &KnownKey) -> bool {
        let bytes = self.bytes();
        let at = spaces(bytes, self.at);
        let rest = &bytes[at..];
        let hit = match rest.first_chunk::<16>() {
            Some(chunk) if key.len <= 16 => u128::from_le_bytes(*chunk) & key.mask == key.word,
            _ => {
                let name = key.name.as_bytes();
                rest.len() >= key.len
                    && rest[0] == b'"'
                    && &rest[1..=name.len()] == name
                    && rest[name.len() + 1..key.len] == *b"\":"
            }
        };
        if hit {
            self.at = at + key.len;
        }
        hit
    }

    /// A string as serde_json decodes it into a `String`: borrowed from
    /// the line unless it holds an escape.
    pub fn string(&mut self) -> Result<Cow<'a, str>, Bail> {
        self.expect(b'"')?;
        let (start, bytes) = (self.at, self.bytes());
        let stop = quote_or_backslash(bytes, start)?;
        if bytes[stop] == b'"' {
            self.at = stop + 1;
            // Both ends sit next to an ASCII quote: char boundaries.
            return Ok(Cow::Borrowed(&self.text[start..stop]));
        }
        self.unescape(start, stop).map(Cow::Owned)
    }

    /// The rest of a string whose first `\` is at `stop`.
    #[cold]
    fn unescape(&mut self, start: usize, mut stop: usize) -> Result<String, Bail> {
        let bytes = self.bytes();
        let mut out = String::with_capacity(stop - start + 16);
        let mut from = start;
        while bytes[stop] == b'\\' {
            out.push_str(&self.text[from..stop]);
            let (c, after) = escape(bytes, stop + 1)?;
            out.push(c);
            from = after;
            stop = quote_or_backslash(bytes, from)?;
        }
        out.push_str(&self.text[from..stop]);
        self.at = stop + 1;
        Ok(out)
    }

    /// An unsigned integer in JSON's own form, `0|[1-9][0-9]*`, that fits
    /// `T`. A sign, fraction or exponent bails (serde_json reads those as
    /// floats, which may or may not convert).
    pub fn uint<T: TryFrom<u64>>(&mut self) -> Result<T, Bail> {
        self.ws();
        let (magnitude, end) = magnitude(self.bytes(), self.at)?;
        self.at = end;
        T::try_from(magnitude).map_err(|_| Bail)
    }

    /// A signed integer, likewise. `-0` bails: serde_json reads it as the
    /// float -0.0, which no integer type takes.
    pub fn int<T: TryFrom<i64>>(&mut self) -> Result<T, Bail> {
        let negative = self.peek() == Some(b'-');
        let (magnitude, end) = magnitude(self.bytes(), self.at + usize::from(negative))?;
        self.at = end;
        let value = match negative {
            true if magnitude == 0 => return Err(Bail),
            true => 0i64.checked_sub_unsigned(magnitude).ok_or(Bail)?,
            false => i64::try_from(magnitude).map_err(|_| Bail)?,
        };
        T::try_from(value).map_err(|_| Bail)
    }

    /// `true`, `false` or `null`, as `word`.
    pub fn literal(&mut self, word: &[u8]) -> Result<(), Bail> {
        self.ws();
        self.at = word_end(self.bytes(), self.at, word)?;
        Ok(())
    }

    pub fn bool(&mut self) -> Result<bool, Bail> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(Bail),
        }
    }

    pub fn null(&mut self) -> Result<(), Bail> {
        self.literal(b"null")
    }

    /// Reads a `null` if one comes next (an `Option`'s `None`); otherwise
    /// reads nothing and answers false.
    pub fn opt_null(&mut self) -> bool {
        self.null().is_ok()
    }

    /// The value of an `Option<String>` member.
    pub fn opt_string(&mut self) -> Result<Option<Cow<'a, str>>, Bail> {
        if self.opt_null() {
            return Ok(None);
        }
        self.string().map(Some)
    }

    /// The value of an `Option` of an unsigned integer member.
    pub fn opt_uint<T: TryFrom<u64>>(&mut self) -> Result<Option<T>, Bail> {
        if self.opt_null() {
            return Ok(None);
        }
        self.uint().map(Some)
    }

    /// Checks and skips any JSON value, as serde_json's `IgnoredAny` does
    /// for keys a struct does not know. `depth` is how many arrays and
    /// objects are open around it; a value nested deeper than
    /// [`MAX_DEPTH`] bails.
    ///
    /// A loop over one position rather than a recursion over the cursor:
    /// it runs over every byte of `chain` and future fields, and a local
    /// position stays in a register.
    pub fn skip_value(&mut self, depth: u32) -> Result<(), Bail> {
        let bytes = self.bytes();
        let mut at = self.at;
        // The open containers, innermost in bit 0, set for an object:
        // MAX_DEPTH of them fit.
        let (mut open, mut objects) = (0u32, 0u64);
        loop {
            // A value starts here.
            at = spaces(bytes, at);
            match bytes.get(at) {
                Some(b'"') => at = string_end(bytes, at + 1)?,
                Some(&c @ (b'[' | b'{')) => {
                    if depth.saturating_add(open) >= MAX_DEPTH {
                        return Err(Bail);
                    }
                    let object = c == b'{';
                    (open, objects) = (open + 1, objects << 1 | u64::from(object));
                    at = spaces(bytes, at + 1);
                    // `]` and `}` are two after their openers.
                    if bytes.get(at) != Some(&(c + 2)) {
                        if object {
                            at = member_key_end(bytes, at)?;
                        }
                        continue;
                    }
                    (open, objects, at) = (open - 1, objects >> 1, at + 1);
                }
                Some(b't') => at = word_end(bytes, at, b"true")?,
                Some(b'f') => at = word_end(bytes, at, b"false")?,
                Some(b'n') => at = word_end(bytes, at, b"null")?,
                Some(b'-' | b'0'..=b'9') => at = number_end(bytes, at)?,
                _ => return Err(Bail),
            }
            // A value ended: close what it ends, up to the next item.
            loop {
                if open == 0 {
                    self.at = at;
                    return Ok(());
                }
                at = spaces(bytes, at);
                let object = objects & 1 == 1;
                match (bytes.get(at), object) {
                    (Some(b','), _) => {
                        at += 1;
                        if object {
                            at = member_key_end(bytes, at)?;
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        (open, objects, at) = (open - 1, objects >> 1, at + 1);
                    }
                    _ => return Err(Bail),
                }
            }
        }
    }
}

// The scanning steps: each takes the bytes and a position and answers the
// position after what it read.

fn spaces(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at) == Some(&b' ') {
        at += 1;
    }
    at
}

/// An object's key known in advance (see [`Cursor::key_is`]): as it is
/// written, `"name":`, in the first 16 bytes of a word.
#[derive(Clone, Copy, Debug)]
pub struct KnownKey {
    pub name: &'static str,
    /// Bytes of `"name":`.
    len: usize,
    /// `"name":` little-endian, and the mask of its bytes; used when it
    /// fits in 16 bytes.
    word: u128,
    mask: u128,
}

impl KnownKey {
    pub const fn new(name: &'static str) -> KnownKey {
        let len = name.len() + 3;
        let (mut word, mut mask) = (0u128, 0u128);
        if len <= 16 {
            let mut i = 0;
            while i < len {
                let byte = if i == 0 || i == len - 2 {
                    b'"'
                } else if i == len - 1 {
                    b':'
                } else {
                    name.as_bytes()[i - 1]
                };
                word |= (byte as u128) << (8 * i);
                mask |= 0xff << (8 * i);
                i += 1;
            }
        }
        KnownKey {
            name,
            len,
            word,
            mask,
        }
    }
}

/// Where the next `"` or `\` is, from `from` on. Most strings in a line
/// are short (keys, `comm`, flags): a word at a time beats memchr2's
/// setup there, which pays off on long paths and arguments.
fn quote_or_backslash(bytes: &[u8], from: usize) -> Result<usize, Bail> {
    const SHORT_WORDS: usize = 4;
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
    // `(v - 0x01…) & !v` flags a zero byte of `v`; above the first zero
    // byte a borrow may flag more, so the lowest flag is exact.
    let zeros = |v: u64| v.wrapping_sub(ONES) & !v;
    let rest = bytes.get(from..).ok_or(Bail)?;
    let (words, _) = rest.as_chunks::<8>();
    for (n, word) in words.iter().take(SHORT_WORDS).enumerate() {
        let x = u64::from_le_bytes(*word);
        let found = (zeros(x ^ (ONES * 0x22)) | zeros(x ^ (ONES * 0x5c))) & HIGH_BITS;
        if found != 0 {
            return Ok(from + n * 8 + found.trailing_zeros() as usize / 8);
        }
    }
    let skipped = words.len().min(SHORT_WORDS) * 8;
    memchr2(b'"', b'\\', &rest[skipped..])
        .map(|i| from + skipped + i)
        .ok_or(Bail)
}

/// The end of a string opened before `at`, its escapes checked as
/// [`Cursor::string`] checks them. serde's `IgnoredAny` takes lone
/// surrogates too; they bail here.
fn string_end(bytes: &[u8], mut at: usize) -> Result<usize, Bail> {
    loop {
        let stop = quote_or_backslash(bytes, at)?;
        if bytes[stop] == b'"' {
            return Ok(stop + 1);
        }
        at = escape(bytes, stop + 1)?.1;
    }
}

/// A key of an object being skipped, and its `:`.
fn member_key_end(bytes: &[u8], at: usize) -> Result<usize, Bail> {
    let at = spaces(bytes, at);
    if bytes.get(at) != Some(&b'"') {
        return Err(Bail);
    }
    let at = spaces(bytes, string_end(bytes, at + 1)?);
    if bytes.get(at) != Some(&b':') {
        return Err(Bail);
    }
    Ok(at + 1)
}

/// One escape, its `\` before `at`, as serde_json decodes it into a
/// `String`: a surrogate must be a high one followed by `\u` and a low
/// one, which together are one char.
fn escape(bytes: &[u8], at: usize) -> Result<(char, usize), Bail> {
    let simple = match bytes.get(at) {
        Some(b'"') => '"',
        Some(b'\\') => '\\',
        Some(b'/') => '/',
        Some(b'b') => '\u{8}',
        Some(b'f') => '\u{c}',
        Some(b'n') => '\n',
        Some(b'r') => '\r',
        Some(b't') => '\t',
        Some(b'u') => {
            let (code, at) = match hex4(bytes, at + 1)? {
                high @ 0xD800..=0xDBFF => {
                    if bytes.get(at + 5..at + 7) != Some(b"\\u") {
                        return Err(Bail);
                    }
                    let low = hex4(bytes, at + 7)?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return Err(Bail);
                    }
                    (0x1_0000 + ((high - 0xD800) << 10) + (low - 0xDC00), at + 11)
                }
                code => (code, at + 5),
            };
            // A lone low surrogate is the only value left to refuse.
            return Ok((char::from_u32(code).ok_or(Bail)?, at));
        }
        _ => return Err(Bail),
    };
    Ok((simple, at + 1))
}

fn hex4(bytes: &[u8], at: usize) -> Result<u32, Bail> {
    let digits = bytes.get(at..at + 4).ok_or(Bail)?;
    digits.iter().try_fold(0, |code, &d| {
        Ok(code * 16 + char::from(d).to_digit(16).ok_or(Bail)?)
    })
}

/// Digits without sign, in JSON's form and within u64, which must end
/// where a value may end.
fn magnitude(bytes: &[u8], mut at: usize) -> Result<(u64, usize), Bail> {
    let mut value: u64 = 0;
    match bytes.get(at) {
        Some(b'0') => at += 1,
        Some(b'1'..=b'9') => {
            while let Some(&d @ b'0'..=b'9') = bytes.get(at) {
                value = value
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(u64::from(d - b'0')))
                    .ok_or(Bail)?;
                at += 1;
            }
        }
        _ => return Err(Bail),
    }
    match bytes.get(at) {
        None | Some(b',' | b'}' | b']' | b' ') => Ok((value, at)),
        _ => Err(Bail),
    }
}

/// RFC 8259's number, of any size: an ignored number is never
/// converted, so serde_json takes `1e999` and 30-digit integers there.
fn number_end(bytes: &[u8], at: usize) -> Result<usize, Bail> {
    let digits_from = |at: usize| {
        let count = bytes
            .get(at..)
            .unwrap_or_default()
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if count == 0 {
            Err(Bail)
        } else {
            Ok(at + count)
        }
    };
    let mut at = at + usize::from(bytes.get(at) == Some(&b'-'));
    // Leading zeros: `01` stops after `0`, and the container bails at `1`.
    at = if bytes.get(at) == Some(&b'0') {
        at + 1
    } else {
        digits_from(at)?
    };
    if bytes.get(at) == Some(&b'.') {
        at = digits_from(at + 1)?;
    }
    if let Some(b'e' | b'E') = bytes.get(at) {
        at += 1;
        at += usize::from(matches!(bytes.get(at), Some(b'+' | b'-')));
        at = digits_from(at)?;
    }
    Ok(at)
}

fn word_end(bytes: &[u8], at: usize, word: &[u8]) -> Result<usize, Bail> {
    if bytes.get(at..at + word.len()) == Some(word) {
        Ok(at + word.len())
    } else {
        Err(Bail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::{DeserializeOwned, IgnoredAny};
    use std::hint::black_box;

    #[test]
    fn a_known_key_is_read_only_as_written() {
        let read = |line: &str, name: &'static str| {
            let Pre::Clean(clean) = precheck(line.as_bytes()) else {
                panic!("{line}");
            };
            let mut c = Cursor::new(clean);
            let hit = c.key_is(&KnownKey::new(name));
            (hit, c.position())
        };
        for name in ["pid", "ancestors_truncated", "new_path_source", "x"] {
            for tail in ["1}", "1,\"padding to 16 bytes\":0}"] {
                let line = format!("\"{name}\":{tail}");
                assert_eq!(read(&line, name), (true, name.len() + 3), "{line}");
                assert_eq!(read(&format!("  {line}"), name), (true, name.len() + 5));
                for other in [
                    format!("\"{name}s\":{tail}"),
                    format!("\"{name}\" :{tail}"),
                    format!("\"{}\":{tail}", &name[..name.len() - 1]),
                    format!("\"{name}\\u0020\":{tail}"),
                ] {
                    assert_eq!(read(&other, name), (false, 0), "{other}");
                }
            }
        }
    }

    fn cursor(text: &str) -> Cursor<'_> {
        match precheck(text.as_bytes()) {
            Pre::Clean(line) => Cursor::new(line),
            other => panic!("{text:?} is not clean: {other:?}"),
        }
    }

    /// Reads one token from `text` and insists nothing else follows.
    fn whole<'a, T>(
        text: &'a str,
        read: impl FnOnce(&mut Cursor<'a>) -> Result<T, Bail>,
    ) -> Result<T, Bail> {
        let mut c = cursor(text);
        let value = read(&mut c)?;
        if c.at_end() {
            Ok(value)
        } else {
            Err(Bail)
        }
    }

    #[test]
    fn precheck_sorts_lines() {
        let clean = |t: &str| match precheck(t.as_bytes()) {
            Pre::Clean(line) => Some(line.as_str().to_owned()),
            _ => None,
        };
        assert_eq!(clean(r#"{"a":1}"#).as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(clean("").as_deref(), Some(""));
        assert_eq!(clean("{\"é\":\"😀\"}").as_deref(), Some("{\"é\":\"😀\"}"));
        assert_eq!(clean("{\"a\":1}\r").as_deref(), Some("{\"a\":1}"));
        let long = format!("{{\"k\":\"{}\"}}", "x".repeat(40));
        assert_eq!(clean(&format!("{long}\r")), Some(long.clone()));
        assert!(matches!(precheck(b"{}\r\r"), Pre::Unusual("{}\r")));
        assert!(matches!(precheck(b"{\r}"), Pre::Unusual(_)));
        assert!(matches!(precheck(b"{\"a\":\t1}"), Pre::Unusual(_)));
        // In a full 16-byte chunk and in the remainder.
        let tab_early = format!("\t{long}");
        let tab_late = format!("{long}\t ");
        assert!(matches!(precheck(tab_early.as_bytes()), Pre::Unusual(_)));
        assert!(matches!(precheck(tab_late.as_bytes()), Pre::Unusual(_)));
        assert!(matches!(precheck(b"\"\x00\""), Pre::Unusual(_)));
        assert_eq!(precheck(b"{\"a\":\"\xff\"}"), Pre::NotUtf8);
        assert_eq!(precheck(b"{\"a\":\"\xc3\"}"), Pre::NotUtf8);
        // Every byte value, at every place in a word and in the tail.
        for byte in 0..=u8::MAX {
            for at in 0..20 {
                let mut line = vec![b'a'; 20];
                line[at] = byte;
                let found = precheck(&line);
                match byte {
                    0x80.. => assert_eq!(found, Pre::NotUtf8),
                    _ if at == 19 && byte == b'\r' => assert!(matches!(found, Pre::Clean(_))),
                    0..0x20 => assert!(matches!(found, Pre::Unusual(_)), "{byte} at {at}"),
                    _ => assert!(matches!(found, Pre::Clean(_)), "{byte} at {at}"),
                }
            }
        }
        // Not UTF-8 wins over a control byte: the serde reader skips both.
        assert_eq!(precheck(b"\t\xed\xa0\x80"), Pre::NotUtf8);
    }

    #[test]
    fn keys() {
        let key = |t| whole(t, |c| c.key()).map(|k| k.to_vec());
        assert_eq!(key(r#""seq":"#), Ok(b"seq".to_vec()));
        assert_eq!(key(r#"  "seq"  :  "#), Ok(b"seq".to_vec()));
        assert_eq!(key(r#""":"#), Ok(b"".to_vec()));
        assert_eq!(key(r#""é":"#), Ok("é".as_bytes().to_vec()));
        assert_eq!(key(r#""se\u0071":"#), Err(Bail));
        assert_eq!(key(r#""a\"b":"#), Err(Bail));
        assert_eq!(key(r#""seq" 1"#), Err(Bail));
        assert_eq!(key(r#""seq"#), Err(Bail));
        assert_eq!(key(r#"seq:"#), Err(Bail));
    }

    #[test]
    fn strings() {
        let string = |t| whole(t, |c| c.string()).map(Cow::into_owned);
        assert!(matches!(
            cursor(r#""/usr/bin/ls""#).string(),
            Ok(Cow::Borrowed("/usr/bin/ls"))
        ));
        assert!(matches!(
            cursor("\"é😀\"").string(),
            Ok(Cow::Borrowed("é😀"))
        ));
        assert_eq!(string(r#""""#), Ok(String::new()));
        assert_eq!(
            string(r#""a\"b\\c\/d\be\ff\ng\rh\ti""#),
            Ok("a\"b\\c/d\u{8}e\u{c}f\ng\rh\ti".into())
        );
        assert_eq!(string(r#""\u00e9\u00E9\u0000""#), Ok("éé\0".into()));
        assert_eq!(string(r#""x\ud83d\ude00y""#), Ok("x😀y".into()));
        assert_eq!(string(r#""\uDBFF\uDFFF""#), Ok("\u{10FFFF}".into()));
        for lone in [
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\ud83d\n""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\ud83d""#,
        ] {
            assert_eq!(string(lone), Err(Bail), "{lone}");
        }
        for bad in [
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\U0041""#,
            r#""\"#,
            r#""abc"#,
            r#""a\""#,
            "abc",
            r#""a" "b""#,
        ] {
            assert_eq!(string(bad), Err(Bail), "{bad}");
        }
    }

    #[test]
    fn unsigned_integers() {
        let u32_ = |t| whole(t, |c| c.uint::<u32>());
        let u64_ = |t| whole(t, |c| c.uint::<u64>());
        assert_eq!(u32_("0"), Ok(0));
        assert_eq!(u32_(" 42 "), Ok(42));
        assert_eq!(u32_("4294967295"), Ok(u32::MAX));
        assert_eq!(u32_("4294967296"), Err(Bail));
        assert_eq!(u64_("4294967296"), Ok(1 << 32));
        assert_eq!(u64_("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(u64_("18446744073709551616"), Err(Bail));
        assert_eq!(u64_("99999999999999999999"), Err(Bail));
        for bad in [
            "01", "00", "-0", "-1", "+1", "1.0", "1e3", "1E3", "0.5", "", " ", "x", "1x", "1-",
        ] {
            assert_eq!(u64_(bad), Err(Bail), "{bad}");
        }
        // A number ends where a value may end.
        for (text, end) in [("7,", 1), ("7}", 1), ("7]", 1), ("7 ,", 1)] {
            let mut c = cursor(text);
            assert_eq!(c.uint::<u32>(), Ok(7));
            assert_eq!(c.position(), end);
        }
    }

    #[test]
    fn signed_integers() {
        let i64_ = |t| whole(t, |c| c.int::<i64>());
        let i32_ = |t| whole(t, |c| c.int::<i32>());
        assert_eq!(i64_("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(i64_("-9223372036854775809"), Err(Bail));
        assert_eq!(i64_("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(i64_("9223372036854775808"), Err(Bail));
        assert_eq!(i32_("-2147483648"), Ok(i32::MIN));
        assert_eq!(i32_("-2147483649"), Err(Bail));
        assert_eq!(i32_("-5"), Ok(-5));
        assert_eq!(i32_("0"), Ok(0));
        for bad in ["-0", "-", "- 5", "--5", "-01", "01", "-1.5", "-1e2", "+5"] {
            assert_eq!(i64_(bad), Err(Bail), "{bad}");
        }
    }

    #[test]
    fn literals() {
        assert_eq!(whole("true", |c| c.bool()), Ok(true));
        assert_eq!(whole(" false", |c| c.bool()), Ok(false));
        assert_eq!(whole("null", |c| c.bool()), Err(Bail));
        assert_eq!(whole("tru", |c| c.bool()), Err(Bail));
        assert_eq!(whole("null", |c| c.null()), Ok(()));
        assert_eq!(whole("nul", |c| c.null()), Err(Bail));
        let mut c = cursor("null,\"x\"");
        assert!(c.opt_null());
        c.expect(b',').unwrap();
        assert!(!c.opt_null());
        assert_eq!(c.string().as_deref(), Ok("x"));
    }

    #[test]
    fn containers() {
        let mut c = cursor(r#"[ ] , { "a" : 1 , "b":2 }"#);
        assert_eq!(c.begin(b'[', b']'), Ok(false));
        c.expect(b',').unwrap();
        assert_eq!(c.begin(b'{', b'}'), Ok(true));
        assert_eq!(c.key(), Ok(&b"a"[..]));
        assert_eq!(c.uint::<u32>(), Ok(1));
        assert_eq!(c.more(b'}'), Ok(true));
        assert_eq!(c.key(), Ok(&b"b"[..]));
        assert_eq!(c.uint::<u32>(), Ok(2));
        assert_eq!(c.more(b'}'), Ok(false));
        assert!(c.at_end());
    }

    #[test]
    fn skips_values() {
        let skip = |t| whole(t, |c| c.skip_value(0));
        for good in [
            "0",
            "-0",
            "-0.0e-0",
            "1E+5",
            "12.50",
            "123456789012345678901234567890",
            "1e99999",
            r#""""#,
            r#""a\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00""#,
            "true",
            "false",
            "null",
            "[]",
            "{}",
            "[ 1 , [ ] , { } ]",
            r#"{"x":[1,{"y":null}],"x":"dup"}"#,
            r#"{"a\u0062":1}"#,
        ] {
            assert_eq!(skip(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-",
            "+1",
            ".5",
            "1.",
            "1.e5",
            "1e",
            "1e+",
            "01",
            "[01]",
            "0x10",
            "NaN",
            "tru",
            "[1,]",
            "[,1]",
            "[1 2]",
            r#"{"a":1,}"#,
            "{,}",
            r#"{"a"}"#,
            r#"{"a":}"#,
            "{1:2}",
            "[",
            "{",
            r#"{"a":1"#,
            "]",
            r#""\x""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#"{"\ud800":1}"#,
        ] {
            assert_eq!(skip(bad), Err(Bail), "{bad}");
        }
    }

    #[test]
    fn skipping_stops_at_the_depth_limit() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(whole(&nested(64), |c| c.skip_value(0)), Ok(()));
        assert_eq!(whole(&nested(65), |c| c.skip_value(0)), Err(Bail));
        assert_eq!(whole(&nested(60), |c| c.skip_value(4)), Ok(()));
        assert_eq!(whole(&nested(61), |c| c.skip_value(4)), Err(Bail));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(64), "}".repeat(64));
        assert_eq!(whole(&objects, |c| c.skip_value(0)), Ok(()));
        assert!(serde_json::from_str::<IgnoredAny>(&nested(64)).is_ok());
    }

    /// A JSON value, written by hand so that numbers keep any valid form
    /// and spaces can go between any two tokens.
    #[derive(Debug, Clone)]
    enum Json {
        Literal(&'static str),
        Number(String),
        Str(String),
        Array(Vec<Json>),
        Object(Vec<(String, Json)>),
    }

    impl Json {
        fn depth(&self) -> usize {
            match self {
                Json::Array(items) => 1 + items.iter().map(Json::depth).max().unwrap_or(0),
                Json::Object(members) => {
                    1 + members.iter().map(|(_, v)| v.depth()).max().unwrap_or(0)
                }
                _ => 0,
            }
        }

        /// Serialises as serde_json would, with `spaces` (cycled) spaces
        /// before each token.
        fn write(&self, out: &mut String, spaces: &[u8], token: &mut usize) {
            let pad = |out: &mut String, token: &mut usize| {
                if !spaces.is_empty() {
                    out.extend(std::iter::repeat_n(
                        ' ',
                        usize::from(spaces[*token % spaces.len()]),
                    ));
                }
                *token += 1;
            };
            pad(out, token);
            match self {
                Json::Literal(word) => out.push_str(word),
                Json::Number(text) => out.push_str(text),
                Json::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
                Json::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            pad(out, token);
                            out.push(',');
                        }
                        item.write(out, spaces, token);
                    }
                    pad(out, token);
                    out.push(']');
                }
                Json::Object(members) => {
                    out.push('{');
                    for (i, (key, value)) in members.iter().enumerate() {
                        if i > 0 {
                            pad(out, token);
                            out.push(',');
                        }
                        pad(out, token);
                        out.push_str(&serde_json::to_string(key).unwrap());
                        pad(out, token);
                        out.push(':');
                        value.write(out, spaces, token);
                    }
                    pad(out, token);
                    out.push('}');
                }
            }
        }
    }

    fn arb_string() -> impl Strategy<Value = String> {
        let char_ = prop_oneof![
            4 => prop::char::range('a', 'z'),
            1 => prop::sample::select(vec!['"', '\\', '/', 'é', '😀', ' ', '\u{7f}', '\u{2028}']),
            1 => (0u8..0x20).prop_map(char::from),
            1 => any::<char>(),
        ];
        prop::collection::vec(char_, 0..10).prop_map(String::from_iter)
    }

    fn arb_number() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?(0|[1-9][0-9]{0,30})(\\.[0-9]{1,8})?([eE][+-]?[0-9]{1,5})?",
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::to_string(&f).unwrap()),
        ]
    }

    fn arb_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            prop::sample::select(vec!["null", "true", "false"]).prop_map(Json::Literal),
            arb_number().prop_map(Json::Number),
            arb_string().prop_map(Json::Str),
        ];
        leaf.prop_recursive(8, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                prop::collection::vec((arb_string(), inner), 0..6).prop_map(Json::Object),
            ]
        })
    }

    /// Spaces before tokens: mostly none, as the agent writes.
    fn arb_spaces() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(vec![]),
            prop::collection::vec(prop_oneof![3 => Just(0u8), 1 => 1u8..3], 1..8)
        ]
    }

    /// Where the scanner ends the first value of `input` if a `,` follows
    /// it, as it would in an object.
    fn scanner_end(input: &str) -> Option<usize> {
        let Pre::Clean(line) = precheck(input.as_bytes()) else {
            return None;
        };
        let mut c = Cursor::new(line);
        c.skip_value(0).ok()?;
        let end = c.position();
        c.expect(b',').ok()?;
        Some(end)
    }

    /// The same for serde_json's `IgnoredAny`.
    fn serde_end(input: &str) -> Option<usize> {
        let mut values = serde_json::Deserializer::from_str(input).into_iter::<IgnoredAny>();
        values.next()?.ok()?;
        let end = values.byte_offset();
        input[end..].trim_start().starts_with(',').then_some(end)
    }

    /// A `\uXXXX` escape of a surrogate, or what looks like one.
    fn has_surrogate_escape(text: &str) -> bool {
        text.match_indices("\\u").any(|(i, _)| {
            text.get(i + 2..i + 6)
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .is_some_and(|code| (0xD800..0xE000).contains(&code))
        })
    }

    /// `text` with a few characters deleted, replaced or inserted.
    fn arb_mutated(text: String) -> impl Strategy<Value = String> {
        let len = text.chars().count();
        let alphabet = prop::sample::select(
            r#"[]{}",: 0123456789-+.eEu\/abfnrtlsxD8C"#
                .chars()
                .collect::<Vec<_>>(),
        );
        prop::collection::vec((0..=len, 0u8..3, alphabet), 1..4).prop_map(move |edits| {
            let mut chars: Vec<char> = text.chars().collect();
            for (at, how, c) in edits {
                let at = at.min(chars.len());
                match how {
                    0 if at < chars.len() => drop(chars.remove(at)),
                    1 if at < chars.len() => chars[at] = c,
                    _ => chars.insert(at, c),
                }
            }
            chars.into_iter().collect()
        })
    }

    fn agrees_on_number<T>(
        text: &str,
        read: impl FnOnce(&mut Cursor<'_>) -> Result<T, Bail>,
    ) -> Result<(), TestCaseError>
    where
        T: DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let theirs = serde_json::from_str::<T>(text).ok();
        if let Pre::Clean(line) = precheck(text.as_bytes()) {
            let mut c = Cursor::new(line);
            if let Some(ours) = read(&mut c).ok().filter(|_| c.at_end()) {
                prop_assert_eq!(Some(ours), theirs, "{:?}", text);
            }
        }
        Ok(())
    }

    fn arb_escapes() -> impl Strategy<Value = String> {
        let hex = prop_oneof![any::<u16>(), 0xD800u16..0xE000, 0u16..0x80];
        let piece = prop_oneof![
            prop::sample::select(vec![
                "a", "é", "😀", " ", "/", r#"\""#, r#"\\"#, r#"\/"#, r#"\b"#, r#"\f"#, r#"\n"#,
                r#"\r"#, r#"\t"#
            ])
            .prop_map(String::from),
            (hex, any::<bool>()).prop_map(|(n, upper)| if upper {
                format!("\\u{n:04X}")
            } else {
                format!("\\u{n:04x}")
            }),
            prop::sample::select(vec![
                r#"\x"#,
                r#"\u12"#,
                r#"\U0041"#,
                r#"\"#,
                r#"""#,
                r#"\u"#,
                r#"\ud83d\"#
            ])
            .prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..8).prop_map(|pieces| format!("\"{}\"", pieces.concat()))
    }

    /// `text` then ` ,`: whatever the scanner skips, serde skips to the
    /// same byte; it bails only on a surrogate escape serde would take.
    fn skips_as_serde_does(text: &str) -> Result<(), TestCaseError> {
        let input = format!("{text} ,");
        let (ours, theirs) = (scanner_end(&input), serde_end(&input));
        if ours.is_some() {
            prop_assert_eq!(ours, theirs, "{:?}", input);
        } else if theirs.is_some() {
            prop_assert!(has_surrogate_escape(&input), "bailed on {:?}", input);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn skips_what_serde_ignores(value in arb_json(), spaces in arb_spaces()) {
            let mut text = String::new();
            value.write(&mut text, &spaces, &mut 0);
            let input = format!("{text} ,");
            let theirs = serde_end(&input);
            prop_assert!(theirs.is_some(), "serde rejects {:?}", input);
            prop_assert!(value.depth() <= 8);
            // serde_json writes no \u surrogates and the depth is small: no bail.
            prop_assert_eq!(scanner_end(&input), theirs, "{:?}", input);
        }

        #[test]
        fn skips_nothing_serde_rejects(text in arb_json().prop_flat_map(|value| {
            let mut text = String::new();
            value.write(&mut text, &[], &mut 0);
            arb_mutated(text)
        })) {
            skips_as_serde_does(&text)?;
        }

        #[test]
        fn skips_no_token_soup_serde_rejects(text in r#"[\[\]{}",: 0-9.eE+\-\\uadfnrtlsD8C]{0,10}"#) {
            skips_as_serde_does(&text)?;
        }

        #[test]
        fn precheck_agrees_with_the_plain_checks(
            pieces in prop::collection::vec(prop_oneof![
                8 => (0x20u8..0x7f).prop_map(|b| vec![b]),
                1 => (0u8..0x20).prop_map(|b| vec![b]),
                1 => prop::sample::select(vec!["é", "😀", "\r"]).prop_map(|s| s.as_bytes().to_vec()),
                1 => any::<u8>().prop_map(|b| vec![b]),
            ], 0..70),
        ) {
            let bytes = pieces.concat();
            let line = bytes.strip_suffix(b"\r").unwrap_or(&bytes);
            let expected = match std::str::from_utf8(line) {
                Err(_) => Pre::NotUtf8,
                Ok(text) if line.iter().any(|&b| b < 0x20) => Pre::Unusual(text),
                Ok(text) => Pre::Clean(Clean(text)),
            };
            prop_assert_eq!(precheck(&bytes), expected);
        }

        #[test]
        fn finds_the_first_quote_or_backslash(
            text in prop::collection::vec(prop::sample::select(vec!["a", "\"", "\\", "é", "😀", " "]), 0..90),
            from in 0usize..100,
        ) {
            let bytes = text.concat().into_bytes();
            let expected = bytes
                .get(from..)
                .and_then(|rest| rest.iter().position(|&b| b == b'"' || b == b'\\'))
                .map(|i| from + i);
            prop_assert_eq!(quote_or_backslash(&bytes, from).ok(), expected);
        }

        #[test]
        fn reads_back_what_serde_writes(s in any::<String>(), t in arb_string()) {
            for s in [s, t] {
                let text = serde_json::to_string(&s).unwrap();
                prop_assert_eq!(whole(&text, |c| c.string()).map(Cow::into_owned), Ok(s));
            }
        }

        #[test]
        fn decodes_escapes_as_serde_does(text in arb_escapes()) {
            let ours = whole(&text, |c| c.string()).map(Cow::into_owned).ok();
            let theirs = serde_json::from_str::<String>(&text).ok();
            prop_assert_eq!(ours, theirs, "{:?}", text);
        }

        #[test]
        fn reads_numbers_as_serde_does(
            text in prop_oneof![
                "-?[0-9]{0,22}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})? ?",
                // Short forms, so that `-0`, `01` and `0.` come up often.
                " ?[-+]?0?[0-9]?[.eE]?[0-9]? ?",
                (prop::sample::select(vec![0i128, 1 << 31, 1 << 32, 1 << 63, 1 << 64, -(1 << 31), -(1 << 63)]), -2i128..=2)
                    .prop_map(|(edge, offset)| (edge + offset).to_string()),
            ],
        ) {
            agrees_on_number::<u32>(&text, |c| c.uint())?;
            agrees_on_number::<u64>(&text, |c| c.uint())?;
            agrees_on_number::<i32>(&text, |c| c.int())?;
            agrees_on_number::<i64>(&text, |c| c.int())?;
        }

        #[test]
        fn reads_every_integer_serde_writes(u in any::<u64>(), i in any::<i64>()) {
            prop_assert_eq!(whole(&u.to_string(), |c| c.uint::<u64>()), Ok(u));
            prop_assert_eq!(whole(&i.to_string(), |c| c.int::<i64>()), Ok(i));
            prop_assert_eq!(whole(&(u as u32).to_string(), |c| c.uint::<u32>()), Ok(u as u32));
            prop_assert_eq!(whole(&(i as i32).to_string(), |c| c.int::<i32>()), Ok(i as i32));
        }
    }

    /// The first line of the bench's mixed log (`xtask` `write_events`).
    const BENCH_LINE: &str = r#"{"seq":0,"time":"2026-11-27T12:00:00.000000000Z","ktime_ns":0,"kind":"exec","syscall":"execve","process":{"pid":1000,"tid":1000,"ppid":1,"uid":0,"gid":0,"euid":0,"egid":0,"auid":null,"comm":"x","exe":"/usr/bin/x","parent_exe":"/usr/bin/bash","cgroup_id":1},"result":{"ok":true,"ret":0,"errno":null},"exec":{"path":"/usr/bin/ls","argv":["ls","-l"],"argv_truncated":false,"cwd":"/root"}}"#;

    /// Keys plus values, containers counted once.
    fn tokens(value: &serde_json::Value) -> usize {
        use serde_json::Value;
        1 + match value {
            Value::Array(items) => items.iter().map(tokens).sum(),
            Value::Object(members) => members.values().map(|v| 1 + tokens(v)).sum(),
            _ => 0,
        }
    }

    /// Reads every key and value with the typed readers, as the schema
    /// walkers will; answers how many tokens it read.
    fn read_all(c: &mut Cursor<'_>) -> Result<usize, Bail> {
        let mut tokens = 1;
        match c.peek() {
            Some(b'"') => drop(black_box(c.string()?)),
            Some(b't' | b'f') => drop(black_box(c.bool()?)),
            Some(b'n') => c.null()?,
            Some(b'0'..=b'9') => drop(black_box(c.uint::<u64>()?)),
            Some(open @ (b'{' | b'[')) => {
                let close = open + 2;
                let mut more = c.begin(open, close)?;
                while more {
                    if open == b'{' {
                        black_box(c.key()?);
                        tokens += 1;
                    }
                    tokens += read_all(c)?;
                    more = c.more(close)?;
                }
            }
            _ => return Err(Bail),
        }
        Ok(tokens)
    }

    /// Not a test: `cargo test --release -p guardrail-engine scan -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_skip_value() {
        use std::time::Instant;
        let count = tokens(&serde_json::from_str(BENCH_LINE).unwrap());
        let Pre::Clean(clean) = precheck(BENCH_LINE.as_bytes()) else {
            panic!("the bench line is clean");
        };
        assert_eq!(read_all(&mut Cursor::new(clean)), Ok(count));
        let rounds = 200_000;
        let time = |what: &str, f: &dyn Fn() -> bool| {
            assert!(f());
            // The best of many short runs: the machine is shared, and a
            // run another process interrupts only counts if none is spared.
            let ns = (0..15)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..rounds {
                        black_box(f());
                    }
                    start.elapsed().as_nanos() as f64 / rounds as f64
                })
                .fold(f64::INFINITY, f64::min);
            println!(
                "{what}: {ns:.0} ns/line, {:.2} ns/token ({count} tokens, {} B)",
                ns / count as f64,
                BENCH_LINE.len()
            );
        };
        time("precheck", &|| {
            matches!(precheck(black_box(BENCH_LINE).as_bytes()), Pre::Clean(_))
        });
        time("skip_value", &|| {
            Cursor::new(black_box(clean)).skip_value(0).is_ok()
        });
        time("key, string, uint, bool, null", &|| {
            read_all(&mut Cursor::new(black_box(clean))).is_ok()
        });
        time(
            "precheck + skip_value",
            &|| match precheck(black_box(BENCH_LINE).as_bytes()) {
                Pre::Clean(line) => Cursor::new(line).skip_value(0).is_ok(),
                _ => false,
            },
        );
        time("serde IgnoredAny", &|| {
            serde_json::from_str::<IgnoredAny>(black_box(BENCH_LINE)).is_ok()
        });
    }
}
