//! Classes of bytes in a value, one bit each: a transformation can change a value only if it
//! holds a byte of a class the transformation `touches`, so a chain none of whose
//! transformations touches a value's classes leaves it as it is, without being run. Likewise
//! an operator can match only a value that holds a byte of a class it `needs`
//! (`Operator::needs`). Digits and `_` are the only bytes of no class.

pub const UPPER: u32 = 1;
pub const LOWER: u32 = 1 << 1;
pub const PERCENT: u32 = 1 << 2;
pub const PLUS: u32 = 1 << 3;
pub const AMP: u32 = 1 << 4;
pub const BACKSLASH: u32 = 1 << 5;
pub const NUL: u32 = 1 << 6;
pub const SPACE: u32 = 1 << 7;
/// `\t \n \r \x0b \x0c`
pub const WS: u32 = 1 << 8;
pub const HIGH: u32 = 1 << 9;
pub const SLASH: u32 = 1 << 10;
pub const DOT: u32 = 1 << 11;
pub const STAR: u32 = 1 << 12;
pub const DASH: u32 = 1 << 13;
pub const HASH: u32 = 1 << 14;
/// `"` and `'`
pub const QUOTE: u32 = 1 << 15;
pub const CARET: u32 = 1 << 16;
pub const COMMA: u32 = 1 << 17;
pub const SEMI: u32 = 1 << 18;
/// Control bytes other than NUL and `WS`: `\x01`-`\x08`, `\x0e`-`\x1f`, `\x7f`.
pub const CTRL: u32 = 1 << 19;
pub const LT: u32 = 1 << 20;
pub const EQ: u32 = 1 << 21;
/// The rest of ASCII punctuation: ``! $ ( ) : > ? @ [ ] ` { | } ~``.
pub const OTHER: u32 = 1 << 22;
/// Transformations that may change any value (decoders of whole values, digests).
pub const ANY: u32 = u32::MAX;

const fn class_of(b: u8) -> u32 {
    match b {
        b'A'..=b'Z' => UPPER,
        b'a'..=b'z' => LOWER,
        b'%' => PERCENT,
        b'+' => PLUS,
        b'&' => AMP,
        b'\\' => BACKSLASH,
        0 => NUL,
        b' ' => SPACE,
        b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => WS,
        0x80..=0xff => HIGH,
        b'/' => SLASH,
        b'.' => DOT,
        b'*' => STAR,
        b'-' => DASH,
        b'#' => HASH,
        b'"' | b'\'' => QUOTE,
        b'^' => CARET,
        b',' => COMMA,
        b';' => SEMI,
        1..=8 | 0x0e..=0x1f | 0x7f => CTRL,
        b'<' => LT,
        b'=' => EQ,
        b'0'..=b'9' | b'_' => 0,
        _ => OTHER,
    }
}

static CLASSES: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = class_of(b as u8);
        b += 1;
    }
    table
};

/// Whether a value of these classes holds no byte of the classes an operator `needs`, so
/// that it cannot match (never for `ANY`, which a value of digits alone does not intersect).
pub fn lacks(classes: u32, needs: u32) -> bool {
    needs != ANY && classes & needs == 0
}

/// The classes of the bytes in `v`.
pub fn byte_classes(v: &[u8]) -> u32 {
    v.iter().fold(0, |acc, b| acc | CLASSES[*b as usize])
}
