//! "Did you mean" suggestions for closed sets of names.

/// Returns the candidate closest to `word`, if one is close enough to be a
/// likely typo: the same word in another case, or within an edit distance
/// of about a third of its length.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate.to_lowercase() == lower {
            return Some(candidate);
        }
        let distance = strsim::damerau_levenshtein(&lower, &candidate.to_lowercase());
        if distance <= limit && best.is_none_or(|(best_distance, _)| distance < best_distance) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Builds help text: the suggestion when there is one, else the valid names.
/// `plural` names the kind of thing, such as "methods".
pub fn did_you_mean(word: &str, candidates: &[&str], plural: &str) -> String {
    match suggest(word, candidates.iter().copied()) {
        Some(candidate) => format!("did you mean `{candidate}`?"),
        None if candidates.is_empty() => format!("no {plural} are declared"),
        None => format!("valid {plural}: {}.", quote_list(candidates)),
    }
}

pub fn quote_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        assert_eq!(suggest("POTS", ["GET", "POST"]), Some("POST"));
        assert_eq!(suggest("post", ["GET", "POST"]), Some("POST"));
        assert_eq!(suggest("entiy", ["entity", "vars"]), Some("entity"));
        assert_eq!(suggest("xyz", ["entity", "vars"]), None);
    }
}
