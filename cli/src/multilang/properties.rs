//! The `java.util.Properties` file format, as `Properties.load` reads it: ISO-8859-1 bytes,
//! `#`/`!` comment lines, keys ending at an unescaped `=`, `:` or whitespace, line
//! continuations with a trailing `\`, and the escapes `\t \n \r \f \uXXXX` (any other escaped
//! character stands for itself). Values are not unquoted; a later key replaces an earlier one.

use std::collections::BTreeMap;

/// Why a properties file could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PropertiesError {
    /// A `\u` escape without four hex digits after it (Java refuses the file too).
    #[error("line {line}: malformed \\uXXXX escape: `\\u` must be followed by four hex digits")]
    MalformedUnicode {
        /// The (1-based) line the logical line started on.
        line: usize,
    },
}

/// A parsed properties file: each key's last value, and the line it was set on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Properties {
    entries: BTreeMap<String, (String, usize)>,
}

impl Properties {
    /// Parses the bytes of a properties file (ISO-8859-1, so every byte is one character).
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, PropertiesError> {
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        let mut entries = BTreeMap::new();
        let mut lines = NaturalLines::new(&text);
        while let Some((number, first)) = lines.next() {
            let first = trim_leading(first);
            if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
                continue;
            }
            // Join continuation lines: a line ending in an odd number of backslashes goes on.
            let mut logical = String::from(first);
            while ends_with_odd_backslashes(&logical) {
                logical.pop();
                match lines.next() {
                    Some((_, next)) => logical.push_str(trim_leading(next)),
                    None => break,
                }
            }
            let (key, value) = split_key_value(&logical);
            let key = unescape(key, number)?;
            let value = unescape(value, number)?;
            entries.insert(key, (value, number));
        }
        Ok(Self { entries })
    }

    /// The value of `key` (exact match), if set.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|(value, _)| value.as_str())
    }

    /// Every key with its value and line, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str, usize)> {
        self.entries
            .iter()
            .map(|(key, (value, line))| (key.as_str(), value.as_str(), *line))
    }
}

/// Splits on `\n`, `\r` and `\r\n`, numbering lines from 1.
struct NaturalLines<'a> {
    rest: &'a str,
    number: usize,
}

impl<'a> NaturalLines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            rest: text,
            number: 0,
        }
    }

    fn next(&mut self) -> Option<(usize, &'a str)> {
        if self.rest.is_empty() {
            return None;
        }
        self.number += 1;
        let end = self.rest.find(['\n', '\r']).unwrap_or(self.rest.len());
        let line = &self.rest[..end];
        let mut after = &self.rest[end..];
        if after.starts_with("\r\n") {
            after = &after[2..];
        } else if !after.is_empty() {
            after = &after[1..];
        }
        self.rest = after;
        Some((self.number, line))
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{c}')
}

fn trim_leading(line: &str) -> &str {
    line.trim_start_matches(is_space)
}

fn ends_with_odd_backslashes(line: &str) -> bool {
    line.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1
}

/// The raw (still escaped) key and value of a logical line.
fn split_key_value(line: &str) -> (&str, &str) {
    let mut escaped = false;
    let mut key_end = line.len();
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '=' || c == ':' || is_space(c) {
            key_end = i;
            break;
        }
    }
    let key = &line[..key_end];
    let mut rest = trim_leading(&line[key_end..]);
    if let Some(after) = rest.strip_prefix(['=', ':']) {
        rest = trim_leading(after);
    }
    (key, rest)
}

fn unescape(raw: &str, line: usize) -> Result<String, PropertiesError> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = (hex.len() == 4)
                    .then(|| u32::from_str_radix(&hex, 16).ok())
                    .flatten()
                    .ok_or(PropertiesError::MalformedUnicode { line })?;
                // A lone surrogate half cannot be a Rust char: keep the replacement character.
                out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Properties {
        Properties::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn separators_comments_and_whitespace() {
        let p = parse(
            "# comment\n! also a comment\n\n  a = 1\nb:2\nc 3\nd=\ne\n\tf  =  x y  \nk=v=w\n",
        );
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("2"));
        assert_eq!(p.get("c"), Some("3"));
        assert_eq!(p.get("d"), Some(""));
        assert_eq!(p.get("e"), Some(""));
        // Leading whitespace of a value is trimmed, trailing kept.
        assert_eq!(p.get("f"), Some("x y  "));
        assert_eq!(p.get("k"), Some("v=w"));
        assert_eq!(p.get("# comment"), None);
    }

    #[test]
    fn continuations_escapes_and_line_endings() {
        let p = parse(
            "long = one \\\n      two \\\r\n three\r\nkey\\ with\\=odd = \\u0041\\tB\\\\\rq=\"quoted\"\n",
        );
        assert_eq!(p.get("long"), Some("one two three"));
        assert_eq!(p.get("key with=odd"), Some("A\tB\\"));
        assert_eq!(p.get("q"), Some("\"quoted\""));
        // An even number of backslashes does not continue.
        let p = parse("a = x\\\\\nb = y\n");
        assert_eq!(p.get("a"), Some("x\\"));
        assert_eq!(p.get("b"), Some("y"));
        // A comment ending in a backslash does not swallow the next line.
        let p = parse("# c \\\nb = y\n");
        assert_eq!(p.get("b"), Some("y"));
    }

    #[test]
    fn latin1_bytes_later_keys_win_and_lines_are_numbered() {
        let p = Properties::parse(b"name = caf\xe9\nname = th\xe9\n\nother=1").unwrap();
        assert_eq!(p.get("name"), Some("th\u{e9}"));
        let lines: Vec<(&str, usize)> = p.iter().map(|(k, _, line)| (k, line)).collect();
        assert_eq!(lines, vec![("name", 2), ("other", 4)]);
    }

    #[test]
    fn malformed_unicode_escape_is_an_error_naming_the_line() {
        assert_eq!(
            Properties::parse(b"a=1\nb = \\u12G4\n"),
            Err(PropertiesError::MalformedUnicode { line: 2 })
        );
        assert_eq!(
            Properties::parse(b"b = \\u12"),
            Err(PropertiesError::MalformedUnicode { line: 1 })
        );
    }
}
