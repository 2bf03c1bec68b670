//! `@rx` regexes as ModSecurity compiles them: CRS's PCRE patterns rewritten where the `regex`
//! crate reads the syntax differently, compiled byte-wise with PCRE's flags, and the few
//! patterns with look-around on `fancy-regex`.

/// A compiled `@rx`: the `regex` crate (linear time) whenever the pattern allows it; the few
/// patterns that need look-around, back-references or possessive quantifiers (CRS 3 has some)
/// go to `fancy-regex` in its byte mode, which backtracks (bounded by a step limit).
#[derive(Debug)]
pub enum Regex {
    Bytes(regex::bytes::Regex),
    Backtracking(fancy_regex::Regex),
}

impl Regex {
    pub fn is_match(&self, value: &[u8]) -> bool {
        match self {
            Regex::Bytes(re) => re.is_match(value),
            Regex::Backtracking(re) => re.is_match(value).unwrap_or(false),
        }
    }

    /// The whole match and up to nine groups (missing groups are empty).
    pub fn captures(&self, value: &[u8]) -> Option<Vec<Vec<u8>>> {
        let groups: Vec<Vec<u8>> = match self {
            // Without groups, the whole match is all there is: found by the DFA, not by the
            // slower engines that track groups (CRS's 920450 captures `^.*$` of each header name).
            Regex::Bytes(re) if re.captures_len() == 1 => vec![re.find(value)?.as_bytes().to_vec()],
            Regex::Bytes(re) => re
                .captures(value)?
                .iter()
                .take(10)
                .map(|g| g.map(|m| m.as_bytes().to_vec()).unwrap_or_default())
                .collect(),
            Regex::Backtracking(re) => re
                .captures(value)
                .ok()??
                .iter()
                .take(10)
                .map(|g| g.map(|m| m.as_bytes().to_vec()).unwrap_or_default())
                .collect(),
        };
        Some(groups)
    }
}

/// A CRS regex as ModSecurity compiles it: dot matches newline, `^`/`$` at line breaks, and
/// byte-wise (no UTF-8 requirement; `\w`, `\d`, `\s` are ASCII as in PCRE without UCP). The
/// PCRE syntax is first rewritten where the `regex` crate reads it differently.
pub fn compile_regex(pattern: &str) -> Result<Regex, String> {
    let rewritten = pcre_to_rust(pattern);
    let fast = regex::bytes::RegexBuilder::new(&rewritten)
        .dot_matches_new_line(true)
        .multi_line(true)
        .unicode(false)
        .size_limit(64 << 20)
        .build();
    match fast {
        Ok(re) => Ok(Regex::Bytes(re)),
        Err(fast_error) => fancy_regex::RegexBuilder::new(&format!("(?sm){rewritten}"))
            .bytes_mode(fancy_regex::BytesMode::Ascii)
            .backtrack_limit(100_000)
            .build()
            .map(Regex::Backtracking)
            .map_err(|e| {
                format!("@rx cannot be compiled: {fast_error}; nor with back-tracking: {e}")
            }),
    }
}

/// Rewrites what PCRE and the `regex` crate read differently:
/// - a non-ASCII character is its UTF-8 bytes (PCRE without UTF reads bytes);
/// - `\x{HH}` (a byte) becomes `\xHH`: in byte mode the crate reads braces as a code point;
/// - a `{` that does not start a quantifier is a literal for PCRE, an error for the crate;
/// - inside a character class, `[` is a literal for PCRE (not a nested class) and `&&`, `--`,
///   `~~` are not set operations.
pub fn pcre_to_rust(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    // Inside a class: the index of the first character after `[` or `[^`.
    let mut class_start: Option<usize> = None;
    while i < chars.len() {
        let c = chars[i];
        if !c.is_ascii() {
            // PCRE without UTF reads the pattern as bytes: a non-ASCII character is its UTF-8
            // bytes, each one on its own (in a class, each byte is a member).
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02X}"));
            }
            i += 1;
            continue;
        }
        if c == '\\' && i + 1 < chars.len() {
            if chars[i + 1] == 'x' && chars.get(i + 2) == Some(&'{') {
                if let Some(close) = chars[i + 3..].iter().position(|c| *c == '}') {
                    let digits: String = chars[i + 3..i + 3 + close].iter().collect();
                    if let Ok(value) = u32::from_str_radix(&digits, 16) {
                        if value <= 0xff {
                            out.push_str(&format!("\\x{value:02X}"));
                            i += 4 + close;
                            continue;
                        }
                    }
                }
            }
            out.push(c);
            out.push(chars[i + 1]);
            i += 2;
            continue;
        }
        match class_start {
            Some(start) => match c {
                ']' if i > start => {
                    class_start = None;
                    out.push(c);
                }
                '[' if chars.get(i + 1) == Some(&':') => {
                    // A POSIX class such as [:alpha:], the same in both.
                    let end = chars[i + 2..]
                        .windows(2)
                        .position(|w| w == [':', ']'])
                        .map(|p| i + 2 + p + 2);
                    match end {
                        Some(end) => {
                            out.extend(&chars[i..end]);
                            i = end;
                            continue;
                        }
                        None => out.push_str("\\["),
                    }
                }
                '[' | '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                }
                '-' if chars.get(i + 1) == Some(&'-') => out.push_str("\\-"),
                _ => out.push(c),
            },
            None => match c {
                '[' => {
                    out.push(c);
                    let mut start = i + 1;
                    if chars.get(start) == Some(&'^') {
                        out.push('^');
                        start += 1;
                    }
                    // A `]` right after `[` or `[^` is a literal.
                    if chars.get(start) == Some(&']') {
                        out.push_str("\\]");
                        start += 1;
                    }
                    class_start = Some(start);
                    i = start;
                    continue;
                }
                '{' => {
                    let quantifier = chars[i + 1..]
                        .iter()
                        .position(|c| *c == '}')
                        .map(|p| chars[i + 1..i + 1 + p].iter().collect::<String>())
                        .is_some_and(|body| {
                            let (a, b) = body.split_once(',').unwrap_or((&body, "0"));
                            !a.is_empty()
                                && a.chars().all(|c| c.is_ascii_digit())
                                && b.chars().all(|c| c.is_ascii_digit())
                        });
                    if quantifier && !out.is_empty() {
                        let close = chars[i..].iter().position(|c| *c == '}').unwrap_or(0);
                        out.extend(&chars[i..=i + close]);
                        i += close + 1;
                        continue;
                    }
                    out.push_str("\\{");
                }
                '}' => out.push_str("\\}"),
                _ => out.push(c),
            },
        }
        i += 1;
    }
    out
}
