//! libinjection's verdicts on recent long values, kept per thread: a browser sends the same
//! `User-Agent` (and often the same `Referer` and cookies) on every request, and running the
//! SQL detector on one costs some 20,000 instructions; a lookup costs a hash and a comparison.
//! A slot holds one value, compared whole, so a hit is the detector's own answer for exactly
//! those bytes; a value that lands on a taken slot replaces it (the cache can be flushed by
//! anyone sending many values, which only costs the detector runs it saves).

use std::cell::RefCell;
use std::hash::BuildHasher;

/// Values shorter than this are cheaper to test again than to look up; longer ones are not
/// kept (they are rarely repeated, and a slot's memory stays bounded).
const MIN_LEN: usize = 12;
const MAX_LEN: usize = 1024;
/// Slots per detector and thread: at most 512 KiB of values per thread for both detectors.
const SLOTS: usize = 256;

/// Which detector a verdict is of.
#[derive(Clone, Copy)]
pub enum Detector {
    Sqli,
    Xss,
}

struct Verdicts {
    hasher: foldhash::fast::RandomState,
    slots: Vec<Option<(Box<[u8]>, bool)>>,
}

impl Verdicts {
    fn new() -> Self {
        Verdicts {
            hasher: foldhash::fast::RandomState::default(),
            slots: vec![None; SLOTS],
        }
    }
}

thread_local! {
    static KEPT: RefCell<[Verdicts; 2]> = RefCell::new([Verdicts::new(), Verdicts::new()]);
}

/// The detector's verdict on `value`: from this thread's slots when it was kept, else run
/// (`detect`) and kept.
pub fn verdict(detector: Detector, value: &[u8], detect: impl FnOnce(&[u8]) -> bool) -> bool {
    if !(MIN_LEN..=MAX_LEN).contains(&value.len()) {
        return detect(value);
    }
    KEPT.with(|kept| {
        let Ok(mut kept) = kept.try_borrow_mut() else {
            return detect(value);
        };
        let verdicts = &mut kept[detector as usize];
        let slot = verdicts.hasher.hash_one(value) as usize % SLOTS;
        if let Some(Some((kept_value, answer))) = verdicts.slots.get(slot) {
            if &kept_value[..] == value {
                return *answer;
            }
        }
        let answer = detect(value);
        if let Some(entry) = verdicts.slots.get_mut(slot) {
            *entry = Some((value.into(), answer));
        }
        answer
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over a stream of repeated and fresh values, attacks and not, many more than the slots
    /// hold (so slots are shared and replaced), every answer is the detector's own.
    #[test]
    fn kept_verdicts_are_the_detectors_own() {
        let sqli = |v: &[u8]| {
            libinjectionrs::SqliState::new(v, libinjectionrs::SqliFlags::FLAG_NONE).detect()
        };
        let xss = |v: &[u8]| libinjectionrs::detect_xss(v).is_injection();
        let values: Vec<String> = (0..1200)
            .map(|i| match i % 4 {
                0 => format!("Mozilla/5.0 (X11; Linux x86_64; rv:{i}.0) Gecko/20100101"),
                1 => format!("1' OR '1'='1' -- padding padding padding {i}"),
                2 => format!("<img src=x onerror=alert({i})> and some more text here"),
                _ => format!("https://app.example.com/orders/{i}?page=2&sort=desc"),
            })
            .collect();
        let mut state: u64 = 0x853C_49E6_748F_EA9B;
        let mut checked = [0usize; 2];
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Most picks from a few hot values, the rest from all of them.
            let i = if state.is_multiple_of(3) {
                state as usize % 1200
            } else {
                state as usize % 8
            };
            let v = values[i].as_bytes();
            assert_eq!(verdict(Detector::Sqli, v, sqli), sqli(v), "{}", values[i]);
            assert_eq!(verdict(Detector::Xss, v, xss), xss(v), "{}", values[i]);
            checked[usize::from(sqli(v))] += 1;
        }
        assert!(checked[0] > 1000 && checked[1] > 1000, "{checked:?}");
        // Short and very long values are not kept, and still answered.
        assert!(verdict(Detector::Sqli, b"' OR 1=1--", sqli));
        let long = format!("{}' OR '1'='1' --", "a ".repeat(600));
        assert_eq!(
            verdict(Detector::Sqli, long.as_bytes(), sqli),
            sqli(long.as_bytes())
        );
    }
}
