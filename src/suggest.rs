//! "Did you mean …?" for unknown names (config keys, later rule fields and signals).

/// The candidate closest to `name` by edit distance, if it is close enough to be a
/// plausible typo (at most a third of the name's length, and at least 1 edit allowed).
pub fn nearest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
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
}
