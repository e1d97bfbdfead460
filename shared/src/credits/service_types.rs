//! Service (operation) type codes and their readable labels, in one table.
//!
//! `portals/self/usage` reports credits by code (`geocode`, `spanalysis`), while the credits
//! report CSV probably uses readable labels as column headers. Both sources are aggregated
//! under the label, so the same service lands in one bucket whichever source it came from.
//! Unknown codes and headers are kept verbatim: a new Esri service must show up in reports,
//! not vanish.

/// `(code, label)` for every service type we know.
const SERVICE_TYPES: &[(&str, &str)] = &[
    ("geocode", "Geocoding"),
    ("spanalysis", "Spatial Analysis"),
    ("geoenrich", "GeoEnrichment"),
    ("netanalysis", "Network Analysis"),
    ("tiles", "Tile Generation"),
    ("intnotebks", "Notebooks"),
    ("schdnotebks", "Scheduled Notebooks"),
    ("featurestg", "Feature Storage"),
    ("filestg", "File Storage"),
    ("elevation", "Elevation Analysis"),
    ("demographics", "Demographics"),
];

/// The bucket for usage that names no service type (a usage query not grouped by `stype`).
pub const UNSPECIFIED: &str = "Unspecified";

/// The readable label for a code (case-insensitive); an unknown code is its own label and an
/// empty one is [`UNSPECIFIED`].
pub fn label(code: &str) -> &str {
    if code.trim().is_empty() {
        return UNSPECIFIED;
    }
    SERVICE_TYPES
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code.trim()))
        .map_or(code.trim(), |&(_, l)| l)
}

/// The code for a readable label (case-insensitive, surrounding spaces ignored), or `None`
/// when the label is not in the table.
pub fn code(label: &str) -> Option<&'static str> {
    SERVICE_TYPES
        .iter()
        .find(|(_, l)| l.eq_ignore_ascii_case(label.trim()))
        .map(|(c, _)| *c)
}

/// The bucket name for a code *or* a label, as found in either source: a known code or
/// label becomes its canonical label, anything else is kept (trimmed).
pub fn canonical(name: &str) -> &str {
    match code(name) {
        Some(c) => label(c),
        None => label(name),
    }
}

/// Whether `name` is a known code or label: such a report column must hold numbers.
pub fn is_known(name: &str) -> bool {
    let name = name.trim();
    SERVICE_TYPES
        .iter()
        .any(|(c, l)| c.eq_ignore_ascii_case(name) || l.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_labels_and_back() {
        for (c, l) in SERVICE_TYPES {
            assert_eq!(label(c), *l);
            assert_eq!(code(l), Some(*c));
        }
        assert_eq!(label("geocode"), "Geocoding");
        assert_eq!(label("SCHDNOTEBKS"), "Scheduled Notebooks");
        assert_eq!(code("spatial analysis"), Some("spanalysis"));
        assert_eq!(code(" Tile Generation "), Some("tiles"));
    }

    #[test]
    fn unknown_codes_keep_their_name() {
        assert_eq!(label("applogin"), "applogin");
        assert_eq!(code("Quantum Routing"), None);
        assert_eq!(canonical(" Quantum Routing "), "Quantum Routing");
        assert!(!is_known("applogin"));
        assert_eq!(label(" "), UNSPECIFIED);
        assert_eq!(canonical(""), UNSPECIFIED);
    }

    #[test]
    fn canonical_merges_codes_and_labels() {
        assert_eq!(canonical("geocode"), "Geocoding");
        assert_eq!(canonical("GEOCODING"), "Geocoding");
        assert_eq!(canonical("Geocoding"), "Geocoding");
        assert!(is_known("geocode") && is_known("geocoding"));
    }
}
