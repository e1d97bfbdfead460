//! The credits report CSV (`reportType=org, reportSubType=credits`).
//!
//! Its layout is not documented (see docs/arcgis.md, "Report items"). Reading it by position
//! (`skiprows=3`, first column = label, sum every other column) breaks on a changed
//! preamble, a second text column, a `Total` row or a malformed cell. This parser instead:
//!
//! - finds the header row: the first row with a `Username` / `User Name` / `user_name` cell
//!   (case-insensitive). Failing that it assumes the positional layout (3 preamble lines,
//!   header on line 4, member in column 1) and says so in [`ReportWarning::HeaderAssumed`];
//! - tells label columns from credit columns: a column is a label (never summed) when its
//!   header is a known label (`Full Name`, `Role`, `Email`, ...) or when none of its cells
//!   is a number; a column named like a known service type always holds credits;
//! - reads blank cells as 0 and rejects malformed numbers with [`ReportCsvError::BadNumber`],
//!   naming the line and the column, instead of silently counting 0;
//! - sets `Total` / `Totals` rows and columns aside (no double counting) and checks them
//!   against the sum, reporting differences as warnings;
//! - keeps unknown service columns under their header, and rows with an empty username as
//!   unattributed;
//! - accepts quoted fields, CRLF line ends, a UTF-8 BOM and preamble lines of any width.

use serde::Serialize;

use super::amount::Credits;
use super::service_types;

/// Why the report could not be read. Each variant names where, so the report format can be
/// checked by hand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportCsvError {
    /// The CSV layer failed (e.g. the file is not UTF-8).
    #[error(
        "credits report is not readable CSV (line {line:?}): {message}; check that the report item is a UTF-8 CSV file"
    )]
    Csv {
        /// 1-based line, when known.
        line: Option<u64>,
        /// The CSV reader's message.
        message: String,
    },
    /// No header row: neither a `Username` cell nor a 4th line.
    #[error(
        "credits report has no header row (no `Username` column and only {lines} line(s)); the report may be empty or still generating"
    )]
    NoHeader {
        /// Lines seen.
        lines: u64,
    },
    /// A credit cell that is neither blank nor a number.
    #[error(
        "credits report line {line}, column {column:?}: {value:?} is not a number; the report format may have changed"
    )]
    BadNumber {
        /// 1-based line.
        line: u64,
        /// Column header.
        column: String,
        /// The cell as found.
        value: String,
    },
    /// A non-empty cell beyond the last header column: it belongs to no column.
    #[error("credits report line {line}: cell {value:?} has no column header; the rows are wider than the header")]
    ExtraCell {
        /// 1-based line.
        line: u64,
        /// The cell as found.
        value: String,
    },
}

/// Something odd but survivable, returned with the parsed report so callers can log it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
pub enum ReportWarning {
    /// No `Username` header was found; line `line` was taken as the header and column 1 as
    /// the member.
    HeaderAssumed {
        /// The line used as header.
        line: u64,
    },
    /// A `Total` row disagrees with the sum of the member rows for a service.
    TotalRowMismatch {
        /// Line of the total row.
        line: u64,
        /// The service column.
        service: String,
        /// The report's total.
        stated: Credits,
        /// Our sum.
        summed: Credits,
    },
    /// A `Total` column disagrees with the sum of a row's service cells.
    TotalColumnMismatch {
        /// Line of the row.
        line: u64,
        /// The row's member.
        username: Option<String>,
        /// The report's total.
        stated: Credits,
        /// Our sum.
        summed: Credits,
    },
}

/// A credit column of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportColumn {
    /// The header as written in the report.
    pub header: String,
    /// The service bucket ([`service_types::canonical`] of the header).
    pub service: String,
}

/// One member row (or unattributed row) of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportRow {
    /// 1-based line in the file, for tracing numbers back.
    pub line: u64,
    /// The member; `None` when the username cell is empty (or there is no member column).
    pub username: Option<String>,
    /// The row's non-zero credits: (position in [`CreditsReport::columns`], credits). Sparse:
    /// most members use few services in a month.
    pub cells: Vec<(usize, Credits)>,
}

impl ReportRow {
    /// Credits per column, aligned with the report's `columns` (`width` of them), zeros
    /// included.
    pub fn credits(&self, width: usize) -> Vec<Credits> {
        let mut all = vec![Credits::ZERO; width];
        for &(k, x) in &self.cells {
            all[k] = x;
        }
        all
    }
}

/// The parsed report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditsReport {
    /// Credit columns, in file order.
    pub columns: Vec<ReportColumn>,
    /// Headers of the columns read as labels (not summed), for diagnostics.
    pub label_columns: Vec<String>,
    /// Member rows, without total rows.
    pub rows: Vec<ReportRow>,
    /// Survivable oddities.
    pub warnings: Vec<ReportWarning>,
}

/// Header names (normalised: lowercase alphanumerics) of the member column.
const USERNAME_HEADERS: &[&str] = &["username"];
/// Header names of columns that describe the row rather than count credits.
const LABEL_HEADERS: &[&str] = &[
    "fullname",
    "name",
    "firstname",
    "lastname",
    "role",
    "roleid",
    "usertype",
    "userlicensetype",
    "licensetype",
    "email",
    "emailaddress",
    "id",
    "userid",
    "organization",
    "org",
    "orgid",
    "level",
    "date",
    "period",
    "month",
    "week",
    "day",
    "startdate",
    "enddate",
];
/// Label headers meaning the rows are periods, not members (only used without a username header).
const PERIOD_HEADERS: &[&str] = &["date", "period", "month", "week", "day", "startdate", "enddate"];
/// Names of total rows and columns.
const TOTAL_NAMES: &[&str] = &["total", "totals", "grandtotal", "totalcredits", "creditstotal"];
/// Line of the header in the positional layout (3 preamble lines).
const ASSUMED_HEADER_LINE: u64 = 4;

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_one_of(s: &str, names: &[&str]) -> bool {
    names.contains(&norm(s).as_str())
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// A credits cell: the one decimal reader of ArcGIS amounts ([`Credits::parse_rounded`]).
fn parse_number(s: &str) -> Option<Credits> {
    Credits::parse_rounded(s).ok()
}

/// Records read before the header is known: a report whose `Username` header is not among
/// the first this many records is read in the positional layout (header on line 4).
const HEADER_SEARCH_RECORDS: usize = 64;

struct Record {
    line: u64,
    cells: Vec<String>,
}

impl Record {
    fn cell(&self, j: usize) -> &str {
        self.cells.get(j).map_or("", String::as_str)
    }
}

#[derive(Clone, Copy)]
enum ColumnKind {
    Username,
    Label,
    Total,
    Service,
    /// No header and no content (a trailing comma).
    Empty,
}

/// What the member rows showed of a column whose kind its header does not decide.
#[derive(Default, Clone)]
struct Seen {
    /// A non-blank cell.
    filled: bool,
    /// A cell that reads as a number.
    number: bool,
    /// The first non-blank cell that is not a number: an error if the column holds credits.
    first_text: Option<(u64, String)>,
}

/// Parses the report; see the module documentation for the rules.
pub fn parse(input: &[u8]) -> Result<CreditsReport, ReportCsvError> {
    read(input)
}

/// Parses the report as it is read from `input`, one row at a time: memory holds each member's
/// non-zero credits, not the file. Same rules as [`parse`], except that the header must be
/// among the first [`HEADER_SEARCH_RECORDS`] records to be found by its `Username` cell.
pub fn read(input: impl std::io::Read) -> Result<CreditsReport, ReportCsvError> {
    let mut input = std::io::BufReader::new(input);
    skip_bom(&mut input).map_err(|e| ReportCsvError::Csv {
        line: None,
        message: e.to_string(),
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut records = reader.records().map(|result| {
        let record = result.map_err(|e| ReportCsvError::Csv {
            line: e.position().map(csv::Position::line),
            message: e.to_string(),
        })?;
        Ok(Record {
            line: record.position().map_or(0, csv::Position::line),
            cells: record.iter().map(str::to_owned).collect(),
        })
    });

    // The header: the first record with a username cell, among the first ones.
    let mut warnings = Vec::new();
    let mut before: Vec<Record> = Vec::new();
    let mut found = None;
    while before.len() < HEADER_SEARCH_RECORDS {
        let Some(record) = records.next().transpose()? else {
            break;
        };
        if let Some(j) = record.cells.iter().position(|c| is_one_of(c, USERNAME_HEADERS)) {
            found = Some((record, Some(j)));
            break;
        }
        before.push(record);
    }
    let mut held_back = Vec::new();
    let (header, username_col) = match found {
        Some(found) => found,
        None => {
            let i = before
                .iter()
                .position(|r| r.line >= ASSUMED_HEADER_LINE)
                .ok_or(ReportCsvError::NoHeader {
                    lines: before.last().map_or(0, |r| r.line),
                })?;
            held_back = before.split_off(i + 1);
            let assumed = before.pop().ok_or(ReportCsvError::NoHeader { lines: 0 })?;
            warnings.push(ReportWarning::HeaderAssumed { line: assumed.line });
            let username_col = (!is_one_of(assumed.cell(0), PERIOD_HEADERS)).then_some(0);
            (assumed, username_col)
        }
    };
    drop(before);

    let width = header.cells.len();
    let decided: Vec<Option<ColumnKind>> = (0..width)
        .map(|j| kind_from_header(j, header.cell(j), username_col))
        .collect();
    let total_col = decided.iter().position(|k| matches!(k, Some(ColumnKind::Total)));
    let column_name = |j: usize| match header.cell(j) {
        "" => format!("column {}", j + 1),
        h => h.to_owned(),
    };
    let bad_number = |(line, value): (u64, String), j: usize| ReportCsvError::BadNumber {
        line,
        column: column_name(j),
        value,
    };

    let mut seen = vec![Seen::default(); width];
    let mut extra_cell: Option<(u64, String)> = None;
    // Member rows while the columns' kinds are still open: their cells hold the non-zero
    // numbers by file column, turned into credit columns in place once the kinds are known
    // (no second list of the rows: at 100,000 members they are most of the report's memory).
    let mut rows: Vec<ReportRow> = Vec::new();
    // The rows' `Total` cells, by row.
    let mut stated_totals: Vec<(usize, Credits)> = Vec::new();
    let mut total_rows: Vec<Record> = Vec::new();
    for record in held_back.into_iter().map(Ok).chain(records) {
        let r = record?;
        if r.cells.iter().all(|c| is_blank(c)) {
            continue;
        }
        if is_one_of(r.cell(username_col.unwrap_or(0)), TOTAL_NAMES) {
            total_rows.push(r);
            continue;
        }
        if extra_cell.is_none()
            && let Some(extra) = r.cells.iter().skip(width).find(|c| !is_blank(c))
        {
            extra_cell = Some((r.line, extra.clone()));
        }
        let mut numbers = Vec::new();
        let mut stated_total = None;
        for (j, kind) in decided.iter().enumerate() {
            if matches!(kind, Some(ColumnKind::Username | ColumnKind::Label)) {
                continue;
            }
            let cell = r.cell(j);
            if is_blank(cell) {
                continue;
            }
            let column = &mut seen[j];
            column.filled = true;
            match parse_number(cell) {
                Some(x) => {
                    column.number = true;
                    if Some(j) == total_col {
                        stated_total = Some(x);
                    } else if !x.is_zero() {
                        numbers.push((j, x));
                    }
                }
                None => {
                    if column.first_text.is_none() {
                        column.first_text = Some((r.line, cell.to_owned()));
                    }
                }
            }
        }
        if let Some(stated) = stated_total {
            stated_totals.push((rows.len(), stated));
        }
        // Kept for every row to the end: no spare capacity.
        numbers.shrink_to_fit();
        rows.push(ReportRow {
            line: r.line,
            username: username_col
                .map(|j| r.cell(j))
                .filter(|u| !is_blank(u))
                .map(str::to_owned),
            cells: numbers,
        });
    }

    if let Some((line, value)) = extra_cell {
        return Err(ReportCsvError::ExtraCell { line, value });
    }
    let kinds: Vec<ColumnKind> = decided
        .iter()
        .enumerate()
        .map(|(j, kind)| kind.unwrap_or_else(|| kind_from_content(header.cell(j), &seen[j])))
        .collect();
    // The first malformed number in reading order (a row's credit columns, then its total).
    let reading_order = |j: usize| (Some(j) == total_col, j);
    let first_bad = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, ColumnKind::Service | ColumnKind::Total))
        .filter_map(|(j, _)| {
            seen[j]
                .first_text
                .as_ref()
                .map(|(line, _)| (*line, reading_order(j), j))
        })
        .min();
    if let Some((_, _, j)) = first_bad
        && let Some(found) = seen[j].first_text.take()
    {
        return Err(bad_number(found, j));
    }

    let service_cols: Vec<usize> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, ColumnKind::Service))
        .map(|(j, _)| j)
        .collect();
    // Column index in the file → position among the credit columns.
    let mut position = vec![None; width];
    for (k, &j) in service_cols.iter().enumerate() {
        position[j] = Some(k);
    }
    let columns: Vec<ReportColumn> = service_cols
        .iter()
        .map(|&j| {
            let header = column_name(j);
            let service = service_types::canonical(&header).to_owned();
            ReportColumn { header, service }
        })
        .collect();
    let label_columns = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, ColumnKind::Label))
        .map(|(j, _)| column_name(j))
        .collect();

    let mut column_sums = vec![Credits::ZERO; columns.len()];
    for row in &mut rows {
        row.cells.retain_mut(|(j, _)| match position[*j] {
            Some(k) => {
                *j = k;
                true
            }
            None => false,
        });
        for &(k, x) in &row.cells {
            column_sums[k] += x;
        }
    }
    for (i, stated) in stated_totals {
        let row = &rows[i];
        let summed: Credits = row.cells.iter().map(|(_, x)| *x).sum();
        if !totals_agree(stated, summed, columns.len()) {
            warnings.push(ReportWarning::TotalColumnMismatch {
                line: row.line,
                username: row.username.clone(),
                stated,
                summed,
            });
        }
    }

    for r in &total_rows {
        for (k, (&j, column)) in service_cols.iter().zip(&columns).enumerate() {
            let cell = r.cell(j);
            if is_blank(cell) {
                continue;
            }
            let stated = parse_number(cell).ok_or_else(|| bad_number((r.line, cell.to_owned()), j))?;
            if !totals_agree(stated, column_sums[k], rows.len()) {
                warnings.push(ReportWarning::TotalRowMismatch {
                    line: r.line,
                    service: column.service.clone(),
                    stated,
                    summed: column_sums[k],
                });
            }
        }
    }

    Ok(CreditsReport {
        columns,
        label_columns,
        rows,
        warnings,
    })
}

/// Skips a UTF-8 byte order mark at the start of `input`.
fn skip_bom(input: &mut impl std::io::BufRead) -> std::io::Result<()> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let mut start = Vec::with_capacity(BOM.len());
    while start.len() < BOM.len() {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let take = (BOM.len() - start.len()).min(buf.len());
        if buf[..take] != BOM[start.len()..start.len() + take] {
            // Not a BOM: nothing consumed unless a partial match spanned buffers, which a
            // BufReader's first fill (8 KB) never splits.
            return Ok(());
        }
        start.extend_from_slice(&buf[..take]);
        input.consume(take);
    }
    Ok(())
}

/// The kind a column's header decides on its own, if any.
fn kind_from_header(j: usize, header: &str, username_col: Option<usize>) -> Option<ColumnKind> {
    if Some(j) == username_col {
        Some(ColumnKind::Username)
    } else if is_one_of(header, TOTAL_NAMES) {
        Some(ColumnKind::Total)
    } else if is_one_of(header, LABEL_HEADERS) || is_one_of(header, USERNAME_HEADERS) {
        Some(ColumnKind::Label)
    } else if service_types::is_known(header) {
        Some(ColumnKind::Service)
    } else {
        None
    }
}

/// The kind of a column its header leaves open: a label when it has text and no number.
fn kind_from_content(header: &str, seen: &Seen) -> ColumnKind {
    if seen.filled && !seen.number {
        ColumnKind::Label
    } else if header.is_empty() && !seen.filled {
        ColumnKind::Empty
    } else {
        ColumnKind::Service
    }
}

/// A cent of a credit: what a total rounded to cents may be off by.
const CENT_MICROS: i128 = 10_000;

/// Totals may be rounded to cents, and each summed cell too: allow a cent for the total
/// plus half a cent per summed cell.
fn totals_agree(stated: Credits, summed: Credits, cells: usize) -> bool {
    let allowed = CENT_MICROS + CENT_MICROS / 2 * cells as i128;
    (stated - summed).micros().abs() <= allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(x: f64) -> Credits {
        Credits::from_f64(x).unwrap()
    }

    fn cs(xs: &[f64]) -> Vec<Credits> {
        xs.iter().map(|&x| c(x)).collect()
    }

    fn parse_str(s: &str) -> Result<CreditsReport, ReportCsvError> {
        parse(s.as_bytes())
    }

    fn usernames(r: &CreditsReport) -> Vec<Option<&str>> {
        r.rows.iter().map(|row| row.username.as_deref()).collect()
    }

    fn services(r: &CreditsReport) -> Vec<&str> {
        r.columns.iter().map(|c| c.service.as_str()).collect()
    }

    #[test]
    fn the_report_layout_with_three_preamble_lines() {
        let r = parse_str(
            "Credits report\nOrg: Example\nPeriod: 2024-03\n\
             Username,Geocoding,Spatial Analysis\njdoe,1.5,2\nasmith,,0.25\n",
        )
        .unwrap();
        assert_eq!(services(&r), ["Geocoding", "Spatial Analysis"]);
        assert_eq!(usernames(&r), [Some("jdoe"), Some("asmith")]);
        assert_eq!(r.rows[0].credits(r.columns.len()), cs(&[1.5, 2.0]));
        assert_eq!(r.rows[1].credits(r.columns.len()), cs(&[0.0, 0.25]));
        assert_eq!(r.rows[0].line, 5);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn header_is_found_after_any_preamble() {
        let one = parse_str("Title\nUser Name,geocode\nu1,1\n").unwrap();
        assert_eq!(services(&one), ["Geocoding"]);
        assert_eq!(usernames(&one), [Some("u1")]);
        let five = parse_str("a\nb\nc,d,e\nf\ng\nUSERNAME,Tiles\nu1,4\n").unwrap();
        assert_eq!(five.rows[0].credits(five.columns.len()), cs(&[4.0]));
        let none = parse_str("username,Notebooks\nu1,3\n").unwrap();
        assert_eq!(none.rows[0].credits(none.columns.len()), cs(&[3.0]));
    }

    #[test]
    fn label_columns_are_not_summed() {
        let r = parse_str(
            "x\ny\nz\nFull Name,Username,Role,Department,Geocoding,Quantum Routing\n\
             John Doe,jdoe,org_user,GIS,1,2\nAmy Smith,asmith,org_admin,Ops,3,\n",
        )
        .unwrap();
        assert_eq!(r.label_columns, ["Full Name", "Role", "Department"]);
        assert_eq!(services(&r), ["Geocoding", "Quantum Routing"]);
        assert_eq!(r.columns[1].header, "Quantum Routing");
        assert_eq!(usernames(&r), [Some("jdoe"), Some("asmith")]);
        assert_eq!(r.rows[1].credits(r.columns.len()), cs(&[3.0, 0.0]));
    }

    #[test]
    fn total_rows_are_set_aside_and_checked() {
        let ok = parse_str("p\np\np\nUsername,Geocoding,Tiles\nu1,1,2\nu2,3,4\nTotal,4,6\n").unwrap();
        assert_eq!(ok.rows.len(), 2);
        assert!(ok.warnings.is_empty());
        let total: Credits = ok.rows.iter().flat_map(|r| r.cells.iter().map(|&(_, x)| x)).sum();
        assert_eq!(total, c(10.0));

        let off = parse_str("p\np\np\nUsername,Geocoding,Tiles\nu1,1,2\nu2,3,4\nTOTALS,4,7\n").unwrap();
        assert_eq!(
            off.warnings,
            [ReportWarning::TotalRowMismatch {
                line: 7,
                service: "Tile Generation".into(),
                stated: c(7.0),
                summed: c(6.0)
            }]
        );
    }

    #[test]
    fn total_columns_are_not_summed_and_checked() {
        let r = parse_str("p\np\np\nUsername,Geocoding,Tiles,Total Credits\nu1,1,2,3\nu2,1,1,5\n").unwrap();
        assert_eq!(services(&r), ["Geocoding", "Tile Generation"]);
        assert_eq!(
            r.warnings,
            [ReportWarning::TotalColumnMismatch {
                line: 6,
                username: Some("u2".into()),
                stated: c(5.0),
                summed: c(2.0)
            }]
        );
    }

    #[test]
    fn empty_usernames_are_unattributed() {
        let r = parse_str("p\np\np\nUsername,Geocoding\n,1.5\n\"  \",2\nu1,3\n").unwrap();
        assert_eq!(usernames(&r), [None, None, Some("u1")]);
    }

    #[test]
    fn malformed_numbers_name_line_and_column() {
        let err = parse_str("p\np\np\nUsername,Geocoding,Tiles\nu1,1,2\nu2,3,4x\n").unwrap_err();
        assert_eq!(
            err,
            ReportCsvError::BadNumber {
                line: 6,
                column: "Tiles".into(),
                value: "4x".into()
            }
        );
        // A known service column stays numeric even if every cell is text.
        let err = parse_str("Username,Geocoding\nu1,n/a\n").unwrap_err();
        assert!(matches!(err, ReportCsvError::BadNumber { line: 2, .. }), "{err}");
        // NaN is not a number of credits.
        assert!(parse_str("Username,Tiles\nu1,NaN\n").is_err());
        // A bad total row is an error too, not a silent skip.
        assert!(parse_str("Username,Tiles\nu1,1\nTotal,abc\n").is_err());
    }

    #[test]
    fn quoting_crlf_bom_and_exponents() {
        let r = parse(
            b"\xEF\xBB\xBF\"Report, monthly\"\r\n\"Org\"\r\n\r\nUsername,\"Geocoding\",\"Custom, Service\"\r\n\
              \"doe, j\",\"1,0\",2.0E-4\r\n",
        );
        // "1,0" (a decimal comma) is not silently misread.
        assert!(matches!(r, Err(ReportCsvError::BadNumber { ref column, .. }) if column == "Geocoding"));
        let r = parse(
            b"\xEF\xBB\xBF\"Report, monthly\"\r\n\"Org\"\r\n\r\nUsername,\"Geocoding\",\"Custom, Service\"\r\n\
              \"doe, j\",\"1.0\",2.0E-4\r\n",
        )
        .unwrap();
        assert_eq!(services(&r), ["Geocoding", "Custom, Service"]);
        assert_eq!(usernames(&r), [Some("doe, j")]);
        assert_eq!(r.rows[0].credits(r.columns.len()), cs(&[1.0, 2.0e-4]));
        // BOM directly before the header.
        let r = parse(b"\xEF\xBB\xBFUsername,Tiles\nu1,1\n").unwrap();
        assert_eq!(r.rows[0].credits(r.columns.len()), cs(&[1.0]));
    }

    #[test]
    fn falling_back_to_the_usual_layout_is_reported() {
        let r = parse_str("a\nb\nc\nMember,Geocoding\nu1,1\n").unwrap();
        assert_eq!(r.warnings, [ReportWarning::HeaderAssumed { line: 4 }]);
        assert_eq!(usernames(&r), [Some("u1")]);
        // Per-period rows: no member column at all, so every row is unattributed.
        let r = parse_str("a\nb\nc\nDate,Geocoding\n2024-03-01,1\n").unwrap();
        assert_eq!(usernames(&r), [None]);
        assert_eq!(r.label_columns, ["Date"]);
        assert_eq!(services(&r), ["Geocoding"]);
        assert!(matches!(
            parse_str("a\nb\n"),
            Err(ReportCsvError::NoHeader { lines: 2 })
        ));
        assert!(matches!(parse_str(""), Err(ReportCsvError::NoHeader { lines: 0 })));
    }

    #[test]
    fn ragged_rows() {
        // Short rows: missing cells are blank. Trailing empty cells are fine.
        let r = parse_str("Username,Geocoding,Tiles,\nu1,1\nu2,1,2,,\n").unwrap();
        assert_eq!(r.rows[0].credits(r.columns.len()), cs(&[1.0, 0.0]));
        assert_eq!(r.rows[1].credits(r.columns.len()), cs(&[1.0, 2.0]));
        assert!(r.label_columns.is_empty());
        let err = parse_str("Username,Geocoding\nu1,1,9\n").unwrap_err();
        assert_eq!(
            err,
            ReportCsvError::ExtraCell {
                line: 2,
                value: "9".into()
            }
        );
    }

    #[test]
    fn invalid_utf8_is_a_typed_error() {
        let err = parse(b"Username,Tiles\n\xFF\xFE,1\n").unwrap_err();
        assert!(matches!(err, ReportCsvError::Csv { .. }), "{err}");
    }
}
