//! Percent-encoding's one shared piece: the value of a hex digit, used alike by path
//! normalisation, the threat screen, the SecLang transformations and log redaction.

/// The value of one hexadecimal digit.
pub fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte() {
        for b in 0..=255u8 {
            let expected = (b as char).to_digit(16).map(|d| d as u8);
            assert_eq!(hex_value(b), expected, "{b}");
        }
    }
}
