//! The compose parser never panics: a kept corpus of nasty inputs (tests/corpus/), random
//! mutations of it, and random text. proptest keeps failing cases in proptest-regressions/.

use std::path::Path;

use proptest::prelude::*;
use seatrial_recipe::load::{compose_from_value, parse_yaml};

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("utf8 corpus file"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is kept in the repository");
    files
}

fn parse(text: &str) -> Result<(), String> {
    let path = Path::new("fuzz.yml");
    let value = parse_yaml(text, path).map_err(|e| e.to_string())?;
    compose_from_value(value, path)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn corpus_gives_results_not_panics() {
    for (name, text) in corpus() {
        let result = parse(&text);
        let expect_ok = matches!(name.as_str(), "anchors.yml" | "scalars.yml" | "unicode.yml");
        assert_eq!(result.is_ok(), expect_ok, "{name}: {result:?}");
        if let Err(message) = result {
            assert!(
                message.contains("fuzz.yml"),
                "{name}: the error names the file: {message}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_never_panics(
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        cut in 0usize..8,
        insert in "[\\[\\]{}:,&*!|>'\"#\\- \n\t0-9a-z<]{0,6}",
    ) {
        let corpus = corpus();
        let (_, text) = &corpus[pick.index(corpus.len())];
        let chars: Vec<char> = text.chars().collect();
        let i = at.index(chars.len() + 1);
        let end = (i + cut).min(chars.len());
        let mutated: String = chars[..i].iter().chain(insert.chars().collect::<Vec<_>>().iter()).chain(chars[end..].iter()).collect();
        let _ = parse(&mutated);
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse(&text);
    }
}
