//! Values that need no injection detector: plain values (letters, digits, `_`, `.`) and word
//! paths (words and numbers joined by `-` or `/`, no SQL keyword). Shared by the built-in
//! threat screen and `@detectSQLi`/`@detectXSS`.

/// Most values are plain words, numbers or identifiers. Made of letters, digits, `_` and `.`
/// only, with no `..`, a value has no percent-encoding, look-alike or control byte to decode,
/// and none of the characters an injection needs (quotes, `<`, `=`, `(`, `;`, `|`, `&`, `$`,
/// spaces, slashes): libinjection and the built-in screen (`checks::threat`) flag no such
/// value. `-` and `@` are not plain: libinjection flags `1-1union` and `1like@`. The test
/// `plain_values_are_clean_for_every_rule` in `checks::threat` holds this against the full
/// classifiers, so that the shortcut changes no verdict.
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
/// `word_paths_are_clean_for_libinjection` in `checks::threat` holds this against both
/// detectors; it says nothing about the other rules (`/etc/passwd` is such a value).
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
