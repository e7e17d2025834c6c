//! Corpora that Lingo generates itself, so a new user can train something meaningful with no download
//! and the result can be checked mechanically.
//!
//! [`Grammar`] is a small context-free grammar of English-like sentences ("the brave fox follows a
//! small bird near the old mill."). A language model trained on its sentences can be judged by the share
//! of its own samples that the grammar accepts.

use lingo_nn::LingoRng;

const DETERMINERS: &[&str] = &["the", "a", "every", "one"];
const ADJECTIVES: &[&str] = &[
    "quick", "small", "old", "red", "quiet", "brave", "tired", "clever",
];
const NOUNS: &[&str] = &[
    "fox", "bird", "king", "river", "child", "sailor", "garden", "mill", "dog", "queen",
];
const TRANSITIVE: &[&str] = &["sees", "chases", "finds", "follows", "loves", "watches"];
const INTRANSITIVE: &[&str] = &["sleeps", "sings", "waits", "runs"];
const PREPOSITIONS: &[&str] = &["near", "under", "beside", "behind"];

/// `S → NP VP "."`, `NP → Det Adj? Noun`, `VP → Vt NP PP? | Vi PP?`, `PP → Prep NP`.
pub struct Grammar;

impl Grammar {
    fn pick<'a>(words: &[&'a str], rng: &mut LingoRng) -> &'a str {
        words[rng.below(words.len())]
    }

    fn noun_phrase(out: &mut Vec<&'static str>, rng: &mut LingoRng) {
        out.push(Self::pick(DETERMINERS, rng));
        if rng.uniform() < 0.5 {
            out.push(Self::pick(ADJECTIVES, rng));
        }
        out.push(Self::pick(NOUNS, rng));
    }

    /// One random sentence.
    pub fn sentence(rng: &mut LingoRng) -> String {
        let mut w = Vec::new();
        Self::noun_phrase(&mut w, rng);
        if rng.uniform() < 0.7 {
            w.push(Self::pick(TRANSITIVE, rng));
            Self::noun_phrase(&mut w, rng);
        } else {
            w.push(Self::pick(INTRANSITIVE, rng));
        }
        if rng.uniform() < 0.4 {
            w.push(Self::pick(PREPOSITIONS, rng));
            Self::noun_phrase(&mut w, rng);
        }
        format!("{}.", w.join(" "))
    }

    /// `n` sentences, one per line.
    pub fn corpus(n: usize, seed: u64) -> String {
        let mut rng = LingoRng::new(seed);
        let mut text = String::new();
        for _ in 0..n {
            text.push_str(&Self::sentence(&mut rng));
            text.push('\n');
        }
        text
    }

    /// Whether the grammar generates `line` exactly.
    pub fn accepts(line: &str) -> bool {
        let Some(body) = line.strip_suffix('.') else {
            return false;
        };
        let words: Vec<&str> = body.split(' ').collect();
        let mut i = 0;
        let noun_phrase = |i: &mut usize| -> bool {
            if words.get(*i).is_none_or(|w| !DETERMINERS.contains(w)) {
                return false;
            }
            *i += 1;
            if words.get(*i).is_some_and(|w| ADJECTIVES.contains(w)) {
                *i += 1;
            }
            let ok = words.get(*i).is_some_and(|w| NOUNS.contains(w));
            *i += 1;
            ok
        };
        if !noun_phrase(&mut i) {
            return false;
        }
        match words.get(i) {
            Some(w) if TRANSITIVE.contains(w) => {
                i += 1;
                if !noun_phrase(&mut i) {
                    return false;
                }
            }
            Some(w) if INTRANSITIVE.contains(w) => i += 1,
            _ => return false,
        }
        if words.get(i).is_some_and(|w| PREPOSITIONS.contains(w)) {
            i += 1;
            if !noun_phrase(&mut i) {
                return false;
            }
        }
        i == words.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_sentences_are_accepted_and_others_are_not() {
        let text = Grammar::corpus(500, 7);
        assert!(text.lines().all(Grammar::accepts));
        for bad in [
            "the fox.",
            "fox sleeps.",
            "the fox sleeps",
            "the fox sees.",
            "the fox sleeps near.",
            "a dog runs the mill.",
        ] {
            assert!(!Grammar::accepts(bad), "{bad}");
        }
        assert!(Grammar::accepts(
            "every clever queen watches one mill behind a river."
        ));
        assert_eq!(Grammar::corpus(10, 1), Grammar::corpus(10, 1));
    }
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Days since 1970-01-01 (proleptic Gregorian; Howard Hinnant's `days_from_civil`).
    pub fn days(&self) -> i64 {
        let y = self.year as i64 - i64::from(self.month <= 2);
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let m = self.month as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + self.day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01 (`civil_from_days`).
    pub fn from_days(days: i64) -> Date {
        let z = days + 719_468;
        let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Date {
            year: (yoe + era * 400) as i32 + i32::from(month <= 2),
            month,
            day,
        }
    }

    /// 0 = Monday.
    pub fn weekday(&self) -> usize {
        (self.days() + 3).rem_euclid(7) as usize
    }

    pub fn iso(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn ordinal(d: u32) -> String {
    let suffix = match (d % 10, d % 100) {
        (1, n) if n != 11 => "st",
        (2, n) if n != 12 => "nd",
        (3, n) if n != 13 => "rd",
        _ => "th",
    };
    format!("{d}{suffix}")
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
}

/// A source sentence and its translation.
pub type Pair = (String, String);

/// Dates written many ways, to be normalised to ISO `YYYY-MM-DD`: the quickstart's translation task.
/// Slashes are always month-first (US), dots always day-first, so every input has one reading.
pub struct DateTask;

impl DateTask {
    /// Number of surface formats.
    pub const FORMATS: usize = 12;

    /// `date` written in surface format `format` (0..FORMATS).
    pub fn render(date: Date, format: usize) -> String {
        let (y, m, d) = (date.year, date.month, date.day);
        let month = MONTHS[m as usize - 1];
        let mon = &month[..3];
        let weekday = WEEKDAYS[date.weekday()];
        match format % Self::FORMATS {
            0 => format!("{weekday} {} of {month} {y}", ordinal(d)),
            1 => format!("{m}/{d}/{:02}", y % 100),
            2 => format!("{} {d}, {y}", capitalised(month)),
            3 => format!("{d} {} {y}", capitalised(month)),
            4 => format!("{d:02}.{m:02}.{y}"),
            5 => format!("{} {d} {y}", capitalised(mon)),
            6 => format!("the {} of {}, {y}", ordinal(d), capitalised(month)),
            7 => format!("{}, {} {d}, {y}", capitalised(weekday), capitalised(month)),
            8 => format!("{y}/{m:02}/{d:02}"),
            9 => format!("{d:02}-{}-{y}", mon.to_uppercase()),
            10 => format!("{month} {} {y}", ordinal(d)),
            _ => format!("{m:02}/{d:02}/{y}"),
        }
    }

    /// `(source, target)` pairs split into training and held-out sets whose *dates* never overlap.
    /// Dates range over 1950–2049 (two-digit years are unambiguous in that window).
    pub fn split(train: usize, test: usize, seed: u64) -> (Vec<Pair>, Vec<Pair>) {
        let first = Date {
            year: 1950,
            month: 1,
            day: 1,
        }
        .days();
        let last = Date {
            year: 2049,
            month: 12,
            day: 31,
        }
        .days();
        let mut rng = LingoRng::new(seed);
        // One day in ten is held out.
        let held_out = |days: i64| days.rem_euclid(10) == 7;
        let mut draw = |want_test: bool| loop {
            let days = first + rng.below((last - first + 1) as usize) as i64;
            if held_out(days) == want_test {
                let date = Date::from_days(days);
                return (Self::render(date, rng.below(Self::FORMATS)), date.iso());
            }
        };
        let train_set = (0..train).map(|_| draw(false)).collect();
        let test_set = (0..test).map(|_| draw(true)).collect();
        (train_set, test_set)
    }
}

#[cfg(test)]
mod date_tests {
    use super::*;

    #[test]
    fn calendar_arithmetic_round_trips_and_knows_weekdays() {
        for days in (-30_000..40_000).step_by(37) {
            assert_eq!(Date::from_days(days).days(), days);
        }
        let d = Date {
            year: 2021,
            month: 3,
            day: 3,
        };
        assert_eq!(WEEKDAYS[d.weekday()], "wednesday");
        assert_eq!(
            Date {
                year: 2000,
                month: 2,
                day: 29
            }
            .days()
                + 1,
            Date {
                year: 2000,
                month: 3,
                day: 1
            }
            .days()
        );
        assert_eq!(DateTask::render(d, 0), "wednesday 3rd of march 2021");
        assert_eq!(DateTask::render(d, 1), "3/3/21");
        assert_eq!(DateTask::render(d, 9), "03-MAR-2021");
        assert_eq!(ordinal(11), "11th");
        assert_eq!(ordinal(22), "22nd");
    }

    #[test]
    fn held_out_dates_are_never_trained_on() {
        let (train, test) = DateTask::split(2000, 300, 1);
        let train_dates: std::collections::HashSet<&String> = train.iter().map(|p| &p.1).collect();
        assert!(test.iter().all(|p| !train_dates.contains(&p.1)));
        assert!(train
            .iter()
            .chain(&test)
            .all(|(_, t)| t.len() == 10 && &t[4..5] == "-"));
        assert_eq!(DateTask::split(5, 5, 9), DateTask::split(5, 5, 9));
    }
}
