//! Fixture tests: every file of invalid candidates and invalid grammars under
//! tests/fixtures/space has its expected messages as a snapshot.

use archsmith::space::grammar::parse_grammar;
use archsmith::space::{CheckOptions, Shape, Space};
use std::fs;
use std::path::Path;

/// Reads the `# space: NAME, input: SHAPE` header of a candidate fixture.
fn header(src: &str, path: &Path) -> (Space, Shape) {
    let first = src.lines().next().unwrap_or_default();
    let rest = first
        .strip_prefix("# space: ")
        .unwrap_or_else(|| panic!("{} lacks the header line", path.display()));
    let (space, input) = rest.split_once(", input: ").expect("header format");
    (
        Space::load(space.trim()).unwrap(),
        input.trim().parse().unwrap(),
    )
}

#[test]
fn invalid_candidates_report_what_and_where() {
    insta::glob!("fixtures/space/invalid_candidates/*.arch", |path| {
        let src = fs::read_to_string(path).unwrap();
        let (space, input) = header(&src, path);
        let results = space.validate_source(&src, input, &CheckOptions::default());
        assert!(!results.is_empty(), "{}: no candidates", path.display());
        let mut report = String::new();
        for (parsed, r) in &results {
            let (line, _) = parsed.span.line_col(&src);
            report.push_str(&format!(
                "line {line}: {}\n",
                parsed.text.replace('\n', " ")
            ));
            match r {
                Ok(_) => panic!("{}: line {line} is valid", path.display()),
                Err(diags) => {
                    for d in diags {
                        let at = d
                            .span
                            .map(|s| {
                                let (l, c) = s.line_col(&src);
                                format!(" [{l}:{c}]")
                            })
                            .unwrap_or_default();
                        report.push_str(&format!("  {:?}{at}: {d}\n", d.stage));
                    }
                }
            }
        }
        insta::assert_snapshot!(report);
    });
}

#[test]
fn invalid_grammars_point_at_line_and_column() {
    insta::glob!("fixtures/space/invalid_grammars/*.grammar", |path| {
        let src = fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let err = parse_grammar(&src, &name).expect_err("the grammar should be refused");
        assert!(!err.errors.is_empty());
        insta::assert_snapshot!(err.to_string());
    });
}
