//! Byte helpers the transformations share.

use crate::percent::hex_value;

/// The no-break space byte that `htmlEntityDecode` makes of `&nbsp;` (ISO 8859-1).
pub(super) const NBSP: u8 = 0xa0;

/// What `removeWhitespace` keeps: not white space, nor a byte of a UTF-8 no-break space
/// (0xc2 0xa0).
pub(super) fn kept_by_remove_whitespace(b: u8) -> bool {
    !is_space(b) && b != 0xa0 && b != 0xc2
}

/// C's `isspace` in the "C" locale.
pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Two hex digits (known to be valid) as a byte.
pub(super) fn hex_pair(hi: u8, lo: u8) -> u8 {
    (hex_value(hi).unwrap_or(0) << 4) | hex_value(lo).unwrap_or(0)
}

pub(super) fn trim_start(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !is_space(*b)).unwrap_or(v.len());
    &v[start..]
}

pub(super) fn trim_end(v: &[u8]) -> &[u8] {
    let end = v.iter().rposition(|b| !is_space(*b)).map_or(0, |i| i + 1);
    &v[..end]
}
