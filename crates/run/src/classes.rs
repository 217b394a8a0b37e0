//! How a model's classes correspond to a dataset's: by name, never silently by position.

/// How the labels of a dataset map onto a model's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelAlignment {
    /// The same names in the same order.
    Same,
    /// The same names in another order: dataset label `i` is model output `map[i]`.
    ByName(Vec<u32>),
    /// One side has only generic names (`LABEL_0`, `0`, …) and both have as many classes: label
    /// `i` is output `i`. Worth a note: nothing checks that the order is the same.
    ByPosition,
}

impl LabelAlignment {
    /// The model output of dataset label `label`.
    pub fn model_label(&self, label: u32) -> u32 {
        match self {
            LabelAlignment::ByName(map) => map[label as usize],
            _ => label,
        }
    }

    /// A line to show the user when the alignment is not the plain one.
    pub fn note(&self, model: &[String], data: &[String]) -> Option<String> {
        match self {
            LabelAlignment::Same => None,
            LabelAlignment::ByName(_) => Some(format!(
                "the model orders its classes {} and the data {}: labels are matched by name",
                model.join(", "),
                data.join(", ")
            )),
            LabelAlignment::ByPosition => Some(format!(
                "the classes are matched by position ({} ↔ {}): one side has only generic names",
                model.join(", "),
                data.join(", ")
            )),
        }
    }
}

/// `LABEL_3` (HF's default names) or `3`: a name that says nothing of the class.
fn is_generic(name: &str, index: usize) -> bool {
    name == format!("LABEL_{index}") || name == index.to_string()
}

/// Match `data` class names onto `model` class names; an error says why they cannot be (other
/// names, or another number of classes).
pub fn align_labels(model: &[String], data: &[String]) -> Result<LabelAlignment, String> {
    if model == data {
        return Ok(LabelAlignment::Same);
    }
    let generic = |names: &[String]| names.iter().enumerate().all(|(i, n)| is_generic(n, i));
    if model.len() == data.len() && (generic(model) || generic(data)) {
        return Ok(LabelAlignment::ByPosition);
    }
    let mut sorted_model = model.to_vec();
    let mut sorted_data = data.to_vec();
    sorted_model.sort();
    sorted_data.sort();
    if sorted_model == sorted_data {
        let map =
            data.iter().map(|d| model.iter().position(|m| m == d).expect("same names") as u32).collect();
        return Ok(LabelAlignment::ByName(map));
    }
    Err(format!(
        "the model's {} classes ({}) are not the data's {} ({})",
        model.len(),
        model.join(", "),
        data.len(),
        data.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_align_in_order_by_name_or_by_position() {
        let np = names(&["neg", "pos"]);
        assert_eq!(align_labels(&np, &np), Ok(LabelAlignment::Same));
        let swapped = align_labels(&names(&["pos", "neg"]), &np).unwrap();
        assert_eq!(swapped, LabelAlignment::ByName(vec![1, 0]));
        assert_eq!((swapped.model_label(0), swapped.model_label(1)), (1, 0));
        assert!(swapped.note(&names(&["pos", "neg"]), &np).unwrap().contains("matched by name"));
        assert_eq!(align_labels(&names(&["LABEL_0", "LABEL_1"]), &np), Ok(LabelAlignment::ByPosition));
        assert_eq!(align_labels(&np, &names(&["0", "1"])), Ok(LabelAlignment::ByPosition));
        let e = align_labels(&names(&["neg", "pos"]), &names(&["sports", "world"])).unwrap_err();
        assert!(e.contains("neg, pos") && e.contains("sports, world"), "{e}");
        assert!(align_labels(&np, &names(&["a", "b", "c"])).is_err());
        assert!(align_labels(&names(&["LABEL_0", "LABEL_1"]), &names(&["a", "b", "c"])).is_err());
    }
}
