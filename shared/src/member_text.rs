//! Text that members write themselves, made safe to show to administrators.
//!
//! Members edit their own `fullName` (and similar profile fields), and those values reach
//! administrators' alert emails and reports. Shown verbatim, a newline in a name forges a
//! paragraph of the email ("ACTION REQUIRED: …"), a right-to-left override makes
//! `"\u{202E}gnp.exe"` read as `exe.png`, and zero-width characters make two different names
//! look identical. [`safe_one_line`] turns such a value into one plain line of bounded length
//! before it is placed anywhere an administrator reads it.
//!
//! It is not an escaper: HTML or CSV output still escapes the result for its own syntax.

/// The most characters of a member-supplied value an alert email shows (a long name is cut
/// with `…`): enough for any real name, too few to smuggle a paragraph.
pub const EMAIL_MAX_CHARS: usize = 80;

/// `text` as one line that shows what it says: control characters (CR, LF, tab and the rest)
/// and Unicode line separators become spaces, invisible formatting characters (bidi
/// overrides and isolates, directional marks, zero-width characters, the byte-order mark,
/// soft hyphens, tag characters) are removed, runs of whitespace collapse to one space, the
/// ends are trimmed, and the result is at most `max_chars` characters, ending with `…` when
/// it was cut. Letters of every script and their accents are kept as they are.
pub fn safe_one_line(text: &str, max_chars: usize) -> String {
    let mut line = String::with_capacity(text.len().min(max_chars.saturating_mul(4)));
    // Starts true so leading whitespace is dropped; a pending space is written only before
    // the next visible character, so trailing whitespace is dropped too.
    let mut at_space = true;
    let mut pending_space = false;
    for c in text.chars() {
        if is_invisible_format(c) {
            continue;
        }
        if c.is_whitespace() || c.is_control() {
            if !at_space {
                pending_space = true;
                at_space = true;
            }
            continue;
        }
        if pending_space {
            line.push(' ');
            pending_space = false;
        }
        line.push(c);
        at_space = false;
    }
    truncate_chars(line, max_chars)
}

/// At most `max` characters, the last one `…` when anything was cut (and no space left
/// dangling before it).
fn truncate_chars(line: String, max: usize) -> String {
    if line.chars().count() <= max {
        return line;
    }
    if max == 0 {
        return String::new();
    }
    let mut cut: String = line.chars().take(max - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// Characters that change how the text around them is displayed, or hide text, without
/// showing anything themselves.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        // Soft hyphen: invisible unless a line breaks at it.
        '\u{00AD}'
        // Arabic letter mark, Mongolian vowel separator.
        | '\u{061C}'
        | '\u{180E}'
        // Zero-width space, non-joiner, joiner; left-to-right and right-to-left marks.
        | '\u{200B}'..='\u{200F}'
        // Bidi embeddings and overrides (LRE, RLE, PDF, LRO, RLO).
        | '\u{202A}'..='\u{202E}'
        // Word joiner, invisible operators, bidi isolates (LRI, RLI, FSI, PDI), deprecated
        // format controls.
        | '\u{2060}'..='\u{206F}'
        // Byte-order mark / zero-width no-break space.
        | '\u{FEFF}'
        // Interlinear annotation controls: hide the text they enclose.
        | '\u{FFF9}'..='\u{FFFB}'
        // Tag characters: invisible copies of ASCII, used to smuggle hidden text.
        | '\u{E0000}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(text: &str) -> String {
        safe_one_line(text, EMAIL_MAX_CHARS)
    }

    #[test]
    fn plain_names_are_unchanged() {
        for name in ["Jane Doe", "J. R. R. Tolkien", "O'Brien-Smith", "x", ""] {
            assert_eq!(show(name), name);
        }
    }

    #[test]
    fn non_latin_names_are_kept() {
        for name in [
            "Zoë Ångström-Müller",
            "José Nuñez",
            "山田 太郎",
            "日本語",
            "Ελένη",
            "محمد علي",
            "עברית",
        ] {
            assert_eq!(show(name), name);
        }
        // A combining accent stays with its letter.
        assert_eq!(show("Rene\u{0301}e"), "Rene\u{0301}e");
    }

    #[test]
    fn a_newline_cannot_forge_a_paragraph() {
        let forged = "Jane Doe\r\n\r\nACTION REQUIRED: approve 10000 credits at https://evil.example\n";
        let shown = show(forged);
        assert_eq!(
            shown,
            "Jane Doe ACTION REQUIRED: approve 10000 credits at https://evil.example"
        );
        for c in ['\n', '\r', '\u{2028}', '\u{2029}', '\u{0085}', '\u{000B}', '\u{000C}'] {
            let shown = show(&format!("a{c}b"));
            assert_eq!(shown, "a b", "{:?}", c);
        }
    }

    #[test]
    fn tabs_and_other_controls_become_single_spaces() {
        assert_eq!(show("  Jane\t\t Doe \u{0007}\u{001B}[31m "), "Jane Doe [31m");
        assert_eq!(show("Jane\u{00A0}\u{3000}Doe"), "Jane Doe");
        assert_eq!(show("\u{0000}\u{007F}\u{009B}"), "");
    }

    #[test]
    fn a_bidi_override_is_removed() {
        assert_eq!(show("\u{202E}gnp.exe"), "gnp.exe");
        assert_eq!(show("invoice\u{2067}fdp.exe\u{2069}"), "invoicefdp.exe");
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
            '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            assert_eq!(show(&format!("a{c}b")), "ab", "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn zero_width_and_hidden_characters_are_removed() {
        assert_eq!(show("ad\u{200B}min"), "admin");
        assert_eq!(show("\u{FEFF}Jane\u{200C}\u{200D}\u{2060} Doe"), "Jane Doe");
        assert_eq!(show("Jane\u{00AD}Doe"), "JaneDoe");
        // Tag characters spelling "hi" invisibly.
        assert_eq!(show("Jane\u{E0068}\u{E0069}"), "Jane");
        // Only invisible characters: nothing to show.
        assert_eq!(show("\u{200B}\u{202E} \u{FEFF}"), "");
    }

    #[test]
    fn long_names_are_cut_with_an_ellipsis() {
        let long = "A".repeat(500);
        let shown = show(&long);
        assert_eq!(shown.chars().count(), EMAIL_MAX_CHARS);
        assert!(shown.ends_with('…'));
        assert_eq!(safe_one_line("abcdef", 6), "abcdef");
        assert_eq!(safe_one_line("abcdefg", 6), "abcde…");
        // No space dangling before the ellipsis.
        assert_eq!(safe_one_line("abcd efgh", 6), "abcd…");
        // Counted in characters, never cut inside one.
        assert_eq!(safe_one_line("日本語のなまえ", 4), "日本語…");
        assert_eq!(safe_one_line("abc", 0), "");
        assert_eq!(safe_one_line("abc", 1), "…");
        // Whitespace collapsed first, so padding cannot push the visible text out.
        assert_eq!(safe_one_line(&format!("Jane{}Doe", " ".repeat(200)), 10), "Jane Doe");
    }
}
