//! Values that need no injection detector: plain values (letters, digits, `_`, `.`) and word
//! paths (words and numbers joined by `-` or `/`, no SQL keyword): `@detectSQLi` and
//! `@detectXSS` pass them without running libinjection.

/// Most values are plain words, numbers or identifiers. Made of letters, digits, `_` and `.`
/// only, with no `..`, a value has no percent-encoding, look-alike or control byte to decode,
/// and none of the characters an injection needs (quotes, `<`, `=`, `(`, `;`, `|`, `&`, `$`,
/// spaces, slashes): libinjection flags no such value. `-` and `@` are not plain: libinjection
/// flags `1-1union` and `1like@`. The test `plain_values_are_clean_for_every_rule` below holds
/// this against both detectors, so that the shortcut changes no verdict.
pub fn is_plain(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
        && !value.windows(2).any(|w| w == b"..")
}

/// The next most common values are words and numbers joined by `-` or `/`: SKUs
/// (`SKU-00042-BLUE-M`), dates (`2026-12-03`), slugs, paths (`/v1/orders/4711`). libinjection
/// flags none of them when every part is a run of digits or a word of letters, digits and `_`
/// that starts with a letter or `_` and is none of its SQL keywords, with one optional `-` or
/// `/` at either end and no empty part. Not in the shape, and left to the detectors: `--` and
/// `//` (comments), `.` (`1.eor` reads as the number `1.e` and the keyword `or`), digits
/// followed by letters (`1union`), keywords (`1-1union`, `select-1`). The test
/// `word_paths_are_clean_for_libinjection` below holds this against both detectors; it says nothing about the other rules (`/etc/passwd` is such a value).
pub fn is_word_path(value: &[u8]) -> bool {
    let mut rest = value;
    if let [b'-' | b'/', tail @ ..] = rest {
        rest = tail;
    }
    if let [head @ .., b'-' | b'/'] = rest {
        rest = head;
    }
    if rest.is_empty() {
        return false;
    }
    let words = &*SQL_WORDS;
    let mut part_start = 0;
    for (i, &b) in rest.iter().enumerate() {
        if b == b'-' || b == b'/' {
            if !words.is_inert(&rest[part_start..i]) {
                return false;
            }
            part_start = i + 1;
        }
    }
    words.is_inert(&rest[part_start..])
}

/// Prose of plain words: the parts of a word path (digit runs, and words that start with a
/// letter or `_` and are none of libinjection's keywords) separated by single spaces — names,
/// street addresses, short notes (`Ana Lopez`, `12 High Street`, `gift wrap please`).
/// libinjection reads them as numbers and barewords and flags none; the test
/// `word_texts_are_clean_for_libinjection` holds this against both detectors.
pub fn is_word_text(value: &[u8]) -> bool {
    let words = &*SQL_WORDS;
    !value.is_empty() && value.split(|&b| b == b' ').all(|part| words.is_inert(part))
}

/// Whether libinjection's XSS detector could flag the value: only when it holds a `<` (a tag,
/// a comment, a doctype) or an `=` (a value for an attribute; the detector flags an attribute
/// only through its value, and the value the input itself starts with belongs to no attribute).
/// The test `xss_needs_a_tag_or_an_attribute_value` holds this against the detector.
pub fn may_be_xss(value: &[u8]) -> bool {
    memchr::memchr2(b'<', b'=', value).is_some()
}

pub(super) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// libinjection's own keyword table (every word it gives a token type, of the version we
/// link), upper case, for the words that can be a part of a word path: those of up to eight
/// bytes packed into a `u64` (a word byte is never 0, so the packing is one to one), the longer
/// ones as they are. Both sets hash with foldhash, seeded per process (hashbrown's default).
struct SqlWords {
    short: hashbrown::HashSet<u64>,
    long: hashbrown::HashSet<Box<[u8]>>,
}

impl SqlWords {
    /// A part of a word path that libinjection reads as a number or a bareword: digits only,
    /// or a word that does not start with a digit and is no keyword.
    fn is_inert(&self, part: &[u8]) -> bool {
        match part {
            [] => false,
            [first, ..] if first.is_ascii_digit() => part.iter().all(u8::is_ascii_digit),
            _ if part.len() <= 8 => {
                let mut key = 0u64;
                for &b in part {
                    if !is_word_byte(b) {
                        return false;
                    }
                    key = key << 8 | u64::from(b.to_ascii_uppercase());
                }
                !self.short.contains(&key)
            }
            _ => {
                part.iter().all(|&b| is_word_byte(b))
                    && !self.long.contains(&*part.to_ascii_uppercase())
            }
        }
    }
}

static SQL_WORDS: std::sync::LazyLock<SqlWords> = std::sync::LazyLock::new(|| {
    let mut words = SqlWords {
        short: hashbrown::HashSet::new(),
        long: hashbrown::HashSet::new(),
    };
    for keyword in libinjectionrs::sqli::sqli_data::SQL_KEYWORDS {
        let word = keyword.word.as_bytes().to_ascii_uppercase();
        if word.is_empty() || !word.iter().all(|&b| is_word_byte(b)) {
            continue;
        }
        if word.len() <= 8 {
            words
                .short
                .insert(word.iter().fold(0u64, |key, &b| key << 8 | u64::from(b)));
        } else {
            words.long.insert(word.into_boxed_slice());
        }
    }
    words
});

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64): every run tests the same values.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        /// A part of a word path or text: a run of up to `max` digits, or a word of up to `max`
        /// letters, digits and `_` that starts with a letter or `_`.
        fn part(&mut self, digits: bool, max: usize, out: &mut Vec<u8>) {
            const START: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_";
            const REST: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_";
            for j in 0..1 + self.below(max) {
                out.push(match (digits, j) {
                    (true, _) => b'0' + self.below(10) as u8,
                    (false, 0) => START[self.below(START.len())],
                    (false, _) => REST[self.below(REST.len())],
                });
            }
        }
    }

    /// What the shortcut stands in for: libinjection's two detectors.
    fn flagged(value: &[u8]) -> bool {
        libinjectionrs::detect_xss(value).is_injection()
            || libinjectionrs::SqliState::new(value, libinjectionrs::SqliFlags::FLAG_NONE).detect()
    }

    /// Every sequence of up to three tokens from SQL keywords, numbers, words and the plain
    /// punctuation: libinjection flags none that `is_plain` lets through (the other rules run on
    /// them regardless).
    #[test]
    fn plain_values_are_clean_for_every_rule() {
        let tokens = [
            "a",
            "1",
            "0x1",
            "1e1",
            "_",
            "-",
            ".",
            "@",
            "or",
            "and",
            "union",
            "select",
            "from",
            "where",
            "sleep",
            "null",
            "drop",
            "admin",
            "x",
            "E",
            "0",
            "1-1",
            "@@version",
            "waitfor",
            "delay",
            "exec",
            "script",
            "javascript",
            "onload",
            "etc",
            "passwd",
            "cat",
            "ls",
            "id",
            "true",
            "like",
            "benchmark",
            "having",
            "order",
            "by",
            "xor",
            "div",
            "mod",
            "not",
            "is",
            "in",
            "rlike",
            "regexp",
            "char",
            "version",
            "1.1",
            "e",
            "case",
            "when",
            "then",
            "end",
            "into",
            "outfile",
            "load_file",
            "insert",
            "update",
        ];
        let mut checked = 0;
        let mut values = vec![String::new()];
        for _ in 0..3 {
            values = values
                .iter()
                .flat_map(|prefix| tokens.iter().map(move |t| format!("{prefix}{t}")))
                .collect();
            for value in values.iter().filter(|v| is_plain(v.as_bytes())) {
                assert!(!flagged(value.as_bytes()), "{value:?}");
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked} values checked");
        for attack in ["1--", "a..b", "x' or 1=1", "a b", "a/b", "a%27", "<x>"] {
            assert!(!is_plain(attack.as_bytes()), "{attack}");
        }
        // Why `-` and `@` are left out of plain values.
        for value in ["1-1union", "1like@"] {
            assert!(flagged(value.as_bytes()), "{value}");
            assert!(!is_plain(value.as_bytes()), "{value}");
        }
    }

    /// The shortcut of `is_word_path` holds against both libinjection detectors: every
    /// sequence of up to eight numbers and words joined by `-` or `/`, with and without a
    /// separator at either end, and 20,000 random ones of up to 14 parts. Keywords, `--`,
    /// `.` and digits followed by letters are outside the shape, and found.
    #[test]
    fn word_paths_are_clean_for_libinjection() {
        let words = ["SKU", "M", "x_1", "BLUE", "a1", "_", "Z9_z", "v1", "orders"];
        let numbers = ["0", "00042", "7", "123456789"];
        let mut checked = 0;
        for len in 1..=8usize {
            for kinds in 0..1u32 << len {
                for seps in 0..1u32 << (len + 1) {
                    // Which of the two ends get a separator, turn by turn.
                    let ends = (kinds ^ seps) % 4;
                    let sep = |i: usize| if seps >> i & 1 == 1 { '/' } else { '-' };
                    let mut value = String::new();
                    if ends & 1 == 1 {
                        value.push(sep(0));
                    }
                    for i in 0..len {
                        if i > 0 {
                            value.push(sep(i));
                        }
                        let pick = (kinds ^ seps) as usize + i;
                        value.push_str(if kinds >> i & 1 == 1 {
                            numbers[pick % numbers.len()]
                        } else {
                            words[pick % words.len()]
                        });
                    }
                    if ends & 2 == 2 {
                        value.push(sep(len));
                    }
                    assert!(is_word_path(value.as_bytes()), "{value:?}");
                    assert!(!flagged(value.as_bytes()), "{value:?}");
                    checked += 1;
                }
            }
        }
        // Random parts: digit runs, and words from letters, digits and `_`.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut random = 0;
        while random < 20_000 {
            let mut value = Vec::new();
            if rng.below(4) == 0 {
                value.push(b"-/"[rng.below(2)]);
            }
            for i in 0..1 + rng.below(14) {
                if i > 0 {
                    value.push(b"-/"[rng.below(2)]);
                }
                let digits = rng.below(2) == 0;
                rng.part(digits, 7, &mut value);
            }
            if rng.below(4) == 0 {
                value.push(b"-/"[rng.below(2)]);
            }
            if is_word_path(&value) {
                assert!(!flagged(&value), "{:?}", String::from_utf8_lossy(&value));
                random += 1;
            }
        }
        assert!(checked > 100_000, "{checked} values checked");
        // Outside the shape, and what libinjection makes of them.
        for value in ["1-1union", "select-1", "1.eor.2", "-1--"] {
            assert!(!is_word_path(value.as_bytes()), "{value}");
        }
        assert!(flagged(b"1-1union") && flagged(b"87.eOr.6670-4"));
        for outside in [
            "", "-", "--", "a--b", "a//b", "1a", "a.b", "SKU-42B", "a b", "a'b",
        ] {
            assert!(!is_word_path(outside.as_bytes()), "{outside:?}");
        }
        // A word path may still be a traversal: the other rules see it.
        assert!(is_word_path(b"/etc/passwd"));
    }

    /// `is_word_text` against both detectors: every text of up to four parts from numbers and
    /// words (with libinjection's trickier readings: `e` and `x` next to digits, `_`, upper
    /// case; five parts, 5.1 million texts, were clean too when this was written, in 86 s of a
    /// debug build) and 50,000 random ones of up to 12 parts; keywords and punctuation stay
    /// outside.
    #[test]
    fn word_texts_are_clean_for_libinjection() {
        let parts = [
            "Ana", "Lopez", "x", "e", "E", "_", "a1", "High", "Street", "12", "0", "1", "00042",
            "x_1", "Z9_z", "gift", "wrap", "please", "D", "N", "O", "T",
        ];
        let mut checked = 0;
        let mut values: Vec<String> = vec![String::new()];
        for _ in 0..4 {
            values = values
                .iter()
                .flat_map(|prefix| {
                    parts.iter().map(move |p| {
                        if prefix.is_empty() {
                            p.to_string()
                        } else {
                            format!("{prefix} {p}")
                        }
                    })
                })
                .collect();
            for v in &values {
                assert!(is_word_text(v.as_bytes()), "{v:?}");
                assert!(!flagged(v.as_bytes()), "{v:?}");
                checked += 1;
            }
        }
        let mut rng = Rng(0x6A09_E667_F3BC_C909);
        let mut random = 0;
        while random < 50_000 {
            let mut value = Vec::new();
            for i in 0..1 + rng.below(12) {
                if i > 0 {
                    value.push(b' ');
                }
                let digits = rng.below(3) == 0;
                rng.part(digits, 8, &mut value);
            }
            if is_word_text(&value) {
                assert!(!flagged(&value), "{:?}", String::from_utf8_lossy(&value));
                random += 1;
            }
        }
        assert!(checked > 100_000, "{checked} values checked");
        for outside in [
            "",
            " ",
            "a  b",
            " a",
            "a ",
            "1 union select 1",
            "a or b",
            "1a",
            "a, b",
            "a.b c",
            "admin' #",
        ] {
            assert!(!is_word_text(outside.as_bytes()), "{outside:?}");
        }
        assert!(flagged(b"1 union select 1"));
    }

    /// `may_be_xss` against libinjection's XSS detector: every value of up to three parts from
    /// bytes and tokens the HTML tokenizer treats specially (quotes, `/`, `>`, `!`, `-`, white
    /// space, event-handler and URL attribute names, `javascript:`, entities, NUL, bytes above
    /// 127) and 200,000 random values of up to 40 such parts or arbitrary bytes: none without
    /// `<` or `=` is flagged. With one of them, the same material is.
    #[test]
    fn xss_needs_a_tag_or_an_attribute_value() {
        let parts: Vec<&[u8]> = vec![
            b"'",
            b"\"",
            b"`",
            b"/",
            b">",
            b"!",
            b"-",
            b"--",
            b" ",
            b"\t",
            b"\n",
            b"\x0c",
            b"\r",
            b"\x00",
            b"\x80",
            b"\xff",
            b"&",
            b"&#",
            b";",
            b":",
            b"(",
            b")",
            b"?",
            b"a",
            b"1",
            b"x",
            b"onload",
            b"onerror",
            b"style",
            b"xmlns",
            b"href",
            b"src",
            b"formaction",
            b"javascript:",
            b"vbscript:",
            b"data:",
            b"alert(1)",
            b"srcdoc",
            b"DOCTYPE",
            b"[if",
            b"xml",
            b"IMPORT",
            b"ENTITY",
            b"script",
            b"svg",
            b"&lt;",
        ];
        let flagged = |v: &[u8]| libinjectionrs::detect_xss(v).is_injection();
        let mut checked = 0;
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..3 {
            values = values
                .iter()
                .flat_map(|prefix| {
                    parts.iter().map(move |p| {
                        let mut v = prefix.clone();
                        v.extend_from_slice(p);
                        v
                    })
                })
                .collect();
            for v in &values {
                assert!(!may_be_xss(v));
                assert!(!flagged(v), "{:?}", String::from_utf8_lossy(v));
                checked += 1;
            }
        }
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..200_000 {
            let mut v = Vec::new();
            for _ in 0..1 + rng.below(40) {
                if rng.below(3) == 0 {
                    let b = rng.below(256) as u8;
                    v.push(if b == b'<' || b == b'=' { b' ' } else { b });
                } else {
                    v.extend_from_slice(parts[rng.below(parts.len())]);
                }
            }
            assert!(!flagged(&v), "{:?}", String::from_utf8_lossy(&v));
            checked += 1;
        }
        assert!(checked > 100_000, "{checked}");
        // The same material with a `<` or an `=` is flagged: the bytes the shortcut needs.
        for attack in [
            &b"x onload=alert(1)"[..],
            b"' onerror=alert(1) '",
            b"<script>",
            b"<!DOCTYPE html>",
            b"\" style=x",
        ] {
            assert!(may_be_xss(attack) && flagged(attack), "{attack:?}");
        }
    }
}
