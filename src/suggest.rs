//! "Did you mean …?" for unknown names (config keys, later rule fields and signals).

/// Names longer than this get no suggestion: the edit distance costs length × length
/// per candidate, so a megabyte-long query parameter would be a cheap CPU attack, and
/// no typo of a name we know is that long.
pub const MAX_SUGGEST_LEN: usize = 128;

/// The candidate closest to `name` by edit distance, if it is close enough to be a
/// plausible typo (at most a third of the name's length, and at least 1 edit allowed).
/// Candidates whose length differs by more than that limit are skipped unmeasured.
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    if name.len() > MAX_SUGGEST_LEN {
        return None;
    }
    let len = name.chars().count();
    let limit = (len / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| c.len() <= MAX_SUGGEST_LEN && c.chars().count().abs_diff(len) <= limit)
        .map(|c| (levenshtein(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance where swapping two neighbours counts as one edit (optimal string
/// alignment, `strsim::osa_distance`), so `fro` is one edit from `for`.
pub fn levenshtein(a: &str, b: &str) -> usize {
    strsim::osa_distance(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_counts_edits() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
        assert_eq!(levenshtein("fro", "for"), 1, "a swap is one edit");
    }

    #[test]
    fn nearest_suggests_typos_but_not_unrelated_names() {
        let keys = ["sample_interval", "sample_timeout", "listen"];
        assert_eq!(nearest("sample_intervall", keys), Some("sample_interval"));
        assert_eq!(nearest("lisen", keys), Some("listen"));
        assert_eq!(nearest("colour", keys), None);
    }

    #[test]
    fn a_huge_name_gets_no_suggestion_and_costs_no_distance_table() {
        let huge = "sample_interval".repeat(70_000);
        let started = std::time::Instant::now();
        assert_eq!(nearest(&huge, ["sample_interval"]), None);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(nearest("x", [huge.as_str()]), None);
    }
}
