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

/// Classic edit distance over chars, O(n·m) time, O(m) memory.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_counts_edits() {
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    #[test]
    fn nearest_suggests_typos_but_not_unrelated_names() {
        let keys = ["sample_interval", "sample_timeout", "listen"];
        assert_eq!(nearest("sample_intervall", keys), Some("sample_interval"));
        assert_eq!(nearest("lisen", keys), Some("listen"));
        assert_eq!(nearest("colour", keys), None);
    }
}
