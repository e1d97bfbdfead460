//! What people read, in their language: the message catalogue (`catalogue.txt` beside this
//! file) and the number, percent and date formats of English and French.
//!
//! One catalogue file holds every message in both languages, so a translator edits one place
//! and a test refuses a key missing in either language. Messages name their parameters
//! (`{count}`), because word order differs between the languages.
//!
//! French numbers group thousands with a narrow no-break space (U+202F, the French
//! typographic convention and what CLDR uses for `fr`) and use a decimal comma: `41 250,00`.
//! The same space goes before `%`. A no-break space, unlike a plain one, never lets a mail
//! client wrap a number across two lines.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::credits::amount::Credits;

/// The catalogue, compiled in: a Lambda reads no file at run time.
const CATALOGUE: &str = include_str!("catalogue.txt");

/// What a message missing from the catalogue reads as.
pub const MISSING: &str = "(missing message)";

/// French thousands separator and the space before `%`: narrow no-break space (module docs).
pub const FR_SPACE: char = '\u{202F}';

/// A language people read credit-steward's messages in (`LANGUAGE`, or a run's `language`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lang {
    /// English (the default, as before languages existed).
    #[default]
    En,
    /// French, the language of the original notebook's administrators.
    Fr,
}

impl Lang {
    /// Every language, in catalogue order.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Fr];

    /// The code used in settings, inputs, the catalogue and HTML's `lang` attribute.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
        }
    }

    /// The message `key` in this language. A key missing from the catalogue (a test refuses
    /// that) reads [`MISSING`], so a slip shows in the text instead of failing a run.
    pub fn t(self, key: &str) -> &'static str {
        catalogue().get(key).and_then(|e| e.text(self)).unwrap_or(MISSING)
    }

    /// The message `key` with its `{name}` parameters replaced by `args`.
    pub fn f(self, key: &str, args: &[(&str, &str)]) -> String {
        fill(self.t(key), args)
    }

    /// The singular (`<key>.one`) or plural (`<key>.other`) form of `key` for `n`, filled
    /// with `args`. French takes the singular for 0 and 1, English for 1 only.
    pub fn p(self, key: &str, n: usize, args: &[(&str, &str)]) -> String {
        let one = match self {
            Lang::En => n == 1,
            Lang::Fr => n <= 1,
        };
        let form = if one { "one" } else { "other" };
        fill(self.t(&format!("{key}.{form}")), args)
    }

    /// Credits with `decimals` decimals and grouped thousands: `41,250.00` / `41 250,00`.
    pub fn credits(self, value: Credits, decimals: u32) -> String {
        self.localize(&value.grouped(decimals))
    }

    /// Credits rounded for reading at a glance: whole credits from 10 up, one decimal below
    /// (where a whole number would read as "0 left").
    pub fn credits_short(self, value: Credits) -> String {
        let small = value.micros().abs() < 10 * 1_000_000;
        self.credits(value, if small { 1 } else { 0 })
    }

    /// A plain count, grouped: `2,000` / `2 000`.
    pub fn count(self, n: usize) -> String {
        self.credits(Credits::whole(i64::try_from(n).unwrap_or(i64::MAX)), 0)
    }

    /// A measured quantity (days, credits per day) with `decimals` decimals, grouped; the
    /// plain number when it is too large to be credits.
    pub fn number(self, x: f64, decimals: u32) -> String {
        Credits::from_f64(x).map_or_else(|_| format!("{x:.0}"), |c| self.credits(c, decimals))
    }

    /// A percentage for reading: whole from 10 up, one decimal below: `5.3%` / `5,3 %`.
    pub fn percent(self, p: f64) -> String {
        let decimals = if p.abs() >= 10.0 { 0 } else { 1 };
        self.percent_with(p, decimals)
    }

    /// A percentage with `decimals` decimals: `81.0%` / `81,0 %`.
    pub fn percent_with(self, p: f64, decimals: u32) -> String {
        let n = self.number(p, decimals);
        match self {
            Lang::En => format!("{n}%"),
            Lang::Fr => format!("{n}{FR_SPACE}%"),
        }
    }

    /// A date: `November 1, 2026` / `1er novembre 2026`.
    pub fn date(self, d: NaiveDate) -> String {
        let month = self.month_name(d.month());
        match self {
            Lang::En => format!("{month} {}, {}", d.day(), d.year()),
            Lang::Fr if d.day() == 1 => format!("1er {month} {}", d.year()),
            Lang::Fr => format!("{} {month} {}", d.day(), d.year()),
        }
    }

    /// A month of a year: `October 2026` / `octobre 2026`.
    pub fn month_year(self, year: i32, month: u32) -> String {
        format!("{} {year}", self.month_name(month))
    }

    /// The month's name (1 = January), from the catalogue.
    pub fn month_name(self, month: u32) -> &'static str {
        const KEYS: [&str; 12] = [
            "month.1", "month.2", "month.3", "month.4", "month.5", "month.6", "month.7", "month.8", "month.9",
            "month.10", "month.11", "month.12",
        ];
        let i = usize::try_from(month.clamp(1, 12) - 1).unwrap_or(0);
        self.t(KEYS[i])
    }

    /// English grouping → this language's (`1,234.5` → `1 234,5`).
    fn localize(self, english: &str) -> String {
        match self {
            Lang::En => english.to_owned(),
            Lang::Fr => english
                .chars()
                .map(|c| match c {
                    ',' => FR_SPACE,
                    '.' => ',',
                    c => c,
                })
                .collect(),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Lang {
    type Err = String;

    /// `en` or `fr`, any case.
    fn from_str(s: &str) -> Result<Lang, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" => Ok(Lang::En),
            "fr" => Ok(Lang::Fr),
            _ => {
                let shown: String = s.chars().take(40).collect();
                Err(format!("'{shown}' is not en or fr"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Lang {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Lang, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Lang {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// One message in every language.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    en: Option<&'static str>,
    fr: Option<&'static str>,
}

impl Entry {
    fn text(&self, lang: Lang) -> Option<&'static str> {
        match lang {
            Lang::En => self.en,
            Lang::Fr => self.fr,
        }
    }
}

/// The compiled-in catalogue, read once. Whatever parses is used even if the file has a
/// mistake: the tests refuse the mistake, a running function does not fail over one message.
fn catalogue() -> &'static BTreeMap<&'static str, Entry> {
    static PARSED: OnceLock<BTreeMap<&'static str, Entry>> = OnceLock::new();
    PARSED.get_or_init(|| parse(CATALOGUE).0)
}

/// Reads a catalogue: `[key]` starts an entry, `en = text` and `fr = text` give its
/// messages, `#` starts a comment line. Returns the entries and every problem found (a
/// message missing in a language, a duplicate, a stray line), each naming its line.
fn parse(text: &'static str) -> (BTreeMap<&'static str, Entry>, Vec<String>) {
    let mut entries: BTreeMap<&'static str, Entry> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut current: Option<&'static str> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(key) = trimmed.strip_prefix('[').and_then(|k| k.strip_suffix(']')) {
            if entries.insert(key, Entry::default()).is_some() {
                problems.push(format!("line {n}: [{key}] is defined twice"));
            }
            current = Some(key);
            continue;
        }
        let Some(key) = current else {
            problems.push(format!("line {n}: a message before any [key]"));
            continue;
        };
        let Some((lang, message)) = trimmed.split_once('=') else {
            problems.push(format!("line {n}: expected `en = …` or `fr = …` in [{key}]"));
            continue;
        };
        let message = message.trim();
        let entry = entries.entry(key).or_default();
        let slot = match lang.trim() {
            "en" => &mut entry.en,
            "fr" => &mut entry.fr,
            other => {
                problems.push(format!("line {n}: unknown language '{other}' in [{key}]"));
                continue;
            }
        };
        if slot.replace(message).is_some() {
            problems.push(format!("line {n}: [{key}] has two {} messages", lang.trim()));
        }
    }
    for (key, entry) in &entries {
        for lang in Lang::ALL {
            match entry.text(lang) {
                None | Some("") => problems.push(format!("[{key}] has no {lang} message")),
                Some(_) => {}
            }
        }
        if let (Some(en), Some(fr)) = (entry.en, entry.fr)
            && placeholders(en) != placeholders(fr)
        {
            problems.push(format!(
                "[{key}]: en uses {:?}, fr uses {:?}",
                placeholders(en),
                placeholders(fr)
            ));
        }
    }
    (entries, problems)
}

/// The `{name}` parameters a message uses, sorted.
fn placeholders(message: &str) -> Vec<&str> {
    let mut names: Vec<&str> = message
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Replaces each `{name}` of `template` by its value in `args`.
fn fill(template: &str, args: &[(&str, &str)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in args {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> Credits {
        Credits::parse_exact(text).unwrap()
    }

    #[test]
    fn every_message_is_in_both_languages() {
        let (entries, problems) = parse(CATALOGUE);
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(entries.len() > 50, "{} entries", entries.len());
    }

    #[test]
    fn a_message_missing_in_one_language_is_refused() {
        let (_, problems) = parse("[a]\nen = One {n}\nfr = Un {n}\n[b]\nen = Two\n[c]\nen = {x}\nfr = {y}\n");
        assert_eq!(
            problems,
            ["[b] has no fr message", "[c]: en uses [\"x\"], fr uses [\"y\"]"]
        );
        let (_, problems) = parse("[a]\nen = x\nfr = y\nfr = z\nde = w\n[a]\n");
        assert_eq!(
            problems,
            [
                "line 4: [a] has two fr messages",
                "line 5: unknown language 'de' in [a]",
                "line 6: [a] is defined twice",
                "[a] has no en message",
                "[a] has no fr message"
            ]
        );
    }

    /// Every key the code asks for is in the catalogue (a typo would otherwise print the key).
    #[test]
    fn every_key_used_exists() {
        let (entries, _) = parse(CATALOGUE);
        let sources = [include_str!("../scan/email.rs"), include_str!("../monthly/render.rs")];
        let mut used = 0;
        for source in sources {
            for marker in [".t(\"", ".f(\"", ".p(\""] {
                for (at, _) in source.match_indices(marker) {
                    let rest = &source[at + marker.len()..];
                    let key = &rest[..rest.find('"').unwrap()];
                    let keys = if marker == ".p(\"" {
                        vec![format!("{key}.one"), format!("{key}.other")]
                    } else {
                        vec![key.to_owned()]
                    };
                    for key in keys {
                        assert!(entries.contains_key(key.as_str()), "missing key [{key}]");
                    }
                    used += 1;
                }
            }
        }
        assert!(used > 40, "{used} keys used");
        for m in 1..=12 {
            assert!(entries.contains_key(format!("month.{m}").as_str()));
        }
    }

    #[test]
    fn numbers_read_the_local_way() {
        let nnbsp = FR_SPACE;
        assert_eq!(Lang::En.credits(c("41250"), 2), "41,250.00");
        assert_eq!(Lang::Fr.credits(c("41250"), 2), format!("41{nnbsp}250,00"));
        assert_eq!(
            Lang::Fr.credits(c("-1234567.891"), 2),
            format!("-1{nnbsp}234{nnbsp}567,89")
        );
        assert_eq!(Lang::En.credits_short(c("4000487.77")), "4,000,488");
        assert_eq!(Lang::Fr.credits_short(c("4.25")), "4,3");
        assert_eq!(Lang::En.percent(5.26), "5.3%");
        assert_eq!(Lang::Fr.percent(62.4), format!("62{nnbsp}%"));
        assert_eq!(Lang::En.count(2000), "2,000");
        assert_eq!(Lang::En.number(f64::INFINITY, 0), "inf");
    }

    #[test]
    fn dates_read_the_local_way() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(Lang::En.date(d("2026-11-01")), "November 1, 2026");
        assert_eq!(Lang::Fr.date(d("2026-11-01")), "1er novembre 2026");
        assert_eq!(Lang::Fr.date(d("2026-08-15")), "15 août 2026");
        assert_eq!(Lang::Fr.month_year(2026, 10), "octobre 2026");
        assert_eq!(Lang::En.month_year(2026, 2), "February 2026");
    }

    #[test]
    fn codes_parse_and_print() {
        assert_eq!("FR".parse::<Lang>(), Ok(Lang::Fr));
        assert_eq!(" en ".parse::<Lang>(), Ok(Lang::En));
        assert_eq!("de".parse::<Lang>(), Err("'de' is not en or fr".to_owned()));
        assert_eq!(serde_json::from_str::<Lang>("\"fr\"").unwrap(), Lang::Fr);
        assert!(serde_json::from_str::<Lang>("\"français\"").is_err());
        assert_eq!(serde_json::to_string(&Lang::Fr).unwrap(), "\"fr\"");
        assert_eq!(Lang::default(), Lang::En);
    }

    #[test]
    fn parameters_are_filled_by_name() {
        assert_eq!(fill("{b} then {a}, {b}", &[("a", "1"), ("b", "2")]), "2 then 1, 2");
    }
}
