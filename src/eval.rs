//! Accuracy on labelled inputs, for `edgevit eval` and `edgevit-tools compare`: which class an
//! input is (from its file name or folder), and top-1/top-5 hits per class with the top-1
//! confusions.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// The 1000 ImageNet-1k WordNet ids in class-index order (sorted), as every ImageNet-1k
/// classifier numbers its outputs. Source: timm's `imagenet_synsets.txt` (Apache-2.0).
const IMAGENET_SYNSETS: &str = include_str!("imagenet_synsets.txt");

/// The class an input is labelled with, if any: an ImageNet file name (`n01440764_123.JPEG`)
/// for 1000-class models, or a parent folder named after a class (its label or its index).
pub fn label_of(path: &Path, labels: &[String]) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    if labels.len() == 1000 {
        let wnid = name.split(['_', '.']).next()?;
        if wnid.len() == 9 && wnid.starts_with('n') && wnid[1..].bytes().all(|b| b.is_ascii_digit()) {
            if let Some(i) = IMAGENET_SYNSETS.lines().position(|l| l.trim() == wnid) {
                return Some(i);
            }
        }
    }
    let folder = path.parent()?.file_name()?.to_str()?;
    labels.iter().position(|l| l == folder).or_else(|| folder.parse::<usize>().ok().filter(|&i| i < labels.len()))
}

/// The rank of class `label` in `logits` (0 = the top class), with ties broken by index as
/// [`crate::top_k`] breaks them.
pub fn rank(logits: &[f32], label: usize) -> usize {
    let l = logits[label];
    logits.iter().enumerate().filter(|&(i, v)| v.total_cmp(&l).then(label.cmp(&i)).is_gt()).count()
}

/// The class ranked first (rank 0): the largest logit, the lowest index among equals.
fn top(logits: &[f32]) -> usize {
    (0..logits.len()).reduce(|best, i| if logits[i].total_cmp(&logits[best]).is_gt() { i } else { best }).unwrap_or(0)
}

/// Running counts over labelled inputs.
#[derive(Clone, Debug)]
pub struct Accuracy {
    /// Per true class: inputs, top-1 hits, top-5 hits.
    per_class: Vec<[usize; 3]>,
    /// (true class, top-1 prediction) -> inputs, for top-1 misses.
    confusions: BTreeMap<(usize, usize), usize>,
}

impl Accuracy {
    /// Counts for a model with `classes` classes.
    pub fn new(classes: usize) -> Self {
        Accuracy { per_class: vec![[0; 3]; classes], confusions: BTreeMap::new() }
    }

    /// Counts one input of class `label` (which must be below the number of classes).
    pub fn add(&mut self, logits: &[f32], label: usize) {
        let r = rank(logits, label);
        let c = &mut self.per_class[label];
        c[0] += 1;
        c[1] += (r == 0) as usize;
        c[2] += (r < 5) as usize;
        if r != 0 {
            *self.confusions.entry((label, top(logits))).or_default() += 1;
        }
    }

    /// Inputs counted so far.
    pub fn inputs(&self) -> usize {
        self.per_class.iter().map(|c| c[0]).sum()
    }

    /// The summary: overall accuracy, the `worst` classes by top-1 accuracy (among those with
    /// inputs) and the `worst` most frequent confusions.
    pub fn report(&self, labels: &[String], worst: usize) -> AccuracyReport {
        let name = |i: usize| labels.get(i).cloned().unwrap_or_else(|| i.to_string());
        let class = |index: usize| ClassRef { index, label: name(index) };
        let total = |k: usize| self.per_class.iter().map(|c| c[k]).sum::<usize>();
        let (inputs, top1, top5) = (total(0), total(1), total(2));
        let share = |hits: usize, n: usize| if n == 0 { 0.0 } else { hits as f64 / n as f64 };
        let mut seen: Vec<usize> = (0..self.per_class.len()).filter(|&i| self.per_class[i][0] > 0).collect();
        let accuracy = |i: usize| share(self.per_class[i][1], self.per_class[i][0]);
        seen.sort_by(|&a, &b| {
            accuracy(a).total_cmp(&accuracy(b)).then(self.per_class[b][0].cmp(&self.per_class[a][0])).then(a.cmp(&b))
        });
        let classes_seen = seen.len();
        let worst_classes = seen
            .into_iter()
            .take(worst)
            .map(|i| {
                let [n, t1, t5] = self.per_class[i];
                let taken_for = self
                    .confusions
                    .range((i, 0)..(i + 1, 0))
                    .max_by(|a, b| a.1.cmp(b.1).then(b.0 .1.cmp(&a.0 .1)))
                    .map(|(&(_, p), &count)| Confused { class: class(p), count });
                ClassAccuracy { class: class(i), inputs: n, top1: share(t1, n), top5: share(t5, n), taken_for }
            })
            .collect();
        let mut confusions: Vec<((usize, usize), usize)> = self.confusions.iter().map(|(&k, &v)| (k, v)).collect();
        confusions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let confusions = confusions
            .into_iter()
            .take(worst)
            .map(|((t, p), count)| Confusion { truth: class(t), predicted: class(p), count })
            .collect();
        AccuracyReport {
            inputs,
            top1_correct: top1,
            top5_correct: top5,
            top1: share(top1, inputs),
            top5: share(top5, inputs),
            classes_seen,
            worst_classes,
            confusions,
        }
    }
}

/// What `edgevit eval --json` prints (besides the model and the input counts).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccuracyReport {
    /// Labelled inputs scored.
    pub inputs: usize,
    /// Inputs whose top class is their label.
    pub top1_correct: usize,
    /// Inputs whose label is among the top five.
    pub top5_correct: usize,
    /// `top1_correct / inputs`.
    pub top1: f64,
    /// `top5_correct / inputs`.
    pub top5: f64,
    /// Classes with at least one input.
    pub classes_seen: usize,
    /// Lowest top-1 accuracy first (more inputs first among equals).
    pub worst_classes: Vec<ClassAccuracy>,
    /// Most frequent top-1 misses first.
    pub confusions: Vec<Confusion>,
}

/// A class by index and label.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassRef {
    /// The class index (the model's output position).
    pub index: usize,
    /// Its label.
    pub label: String,
}

/// How one class fared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassAccuracy {
    /// The class.
    pub class: ClassRef,
    /// Its labelled inputs.
    pub inputs: usize,
    /// Share ranked first.
    pub top1: f64,
    /// Share in the top five.
    pub top5: f64,
    /// The class its inputs were most often taken for, when missed.
    pub taken_for: Option<Confused>,
}

/// A class others were taken for, and how often.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Confused {
    /// The class predicted.
    pub class: ClassRef,
    /// Inputs it was predicted for.
    pub count: usize,
}

/// One kind of top-1 miss: inputs of class `truth` ranked `predicted` first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Confusion {
    /// The inputs' label.
    #[serde(rename = "true")]
    pub truth: ClassRef,
    /// What the model ranked first.
    pub predicted: ClassRef,
    /// How many inputs.
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_imagenet_names_and_folders() {
        let imagenet: Vec<String> = (0..1000).map(|i| format!("class {i}")).collect();
        assert_eq!(label_of(Path::new("x/n01440764_10026.JPEG"), &imagenet), Some(0));
        assert_eq!(label_of(Path::new("n01514668_10054.JPEG"), &imagenet), Some(7));
        assert_eq!(label_of(Path::new("n15075141_1.JPEG"), &imagenet), Some(999));
        let digits: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        assert_eq!(label_of(Path::new("data/7/a.png"), &digits), Some(7));
        assert_eq!(label_of(Path::new("data/12/a.png"), &digits), None);
        let named = vec!["cat".to_string(), "dog".to_string()];
        assert_eq!(label_of(Path::new("pets/dog/x.jpg"), &named), Some(1));
        assert_eq!(label_of(Path::new("pets/x.jpg"), &named), None);
    }

    #[test]
    fn ranks_break_ties_by_index() {
        let l = [0.5, 2.0, 2.0, -1.0];
        assert_eq!([0, 1, 2, 3].map(|i| rank(&l, i)), [2, 0, 1, 3]);
        assert_eq!(top(&l), 1);
    }

    #[test]
    fn counts_on_a_hand_worked_set() {
        let labels: Vec<String> = ["a", "b", "c", "d", "e", "f"].iter().map(|s| s.to_string()).collect();
        let mut acc = Accuracy::new(6);
        // Class 0: one hit, one miss taken for 2 (rank 1). Class 1: a miss taken for 2
        // (rank 5: outside the top 5). Class 3: a hit.
        acc.add(&[5.0, 1.0, 0.0, 0.0, 0.0, 0.0], 0);
        acc.add(&[4.0, 1.0, 5.0, 0.0, 0.0, 0.0], 0);
        acc.add(&[6.0, 0.0, 9.0, 5.0, 4.0, 3.0], 1);
        acc.add(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0], 3);
        let r = acc.report(&labels, 10);
        assert_eq!((r.inputs, r.top1_correct, r.top5_correct, r.classes_seen), (4, 2, 3, 3));
        assert_eq!((r.top1, r.top5), (0.5, 0.75));
        let worst: Vec<(usize, f64, f64)> = r.worst_classes.iter().map(|c| (c.class.index, c.top1, c.top5)).collect();
        assert_eq!(worst, vec![(1, 0.0, 0.0), (0, 0.5, 1.0), (3, 1.0, 1.0)]);
        assert_eq!(
            r.worst_classes[0].taken_for,
            Some(Confused { class: ClassRef { index: 2, label: "c".into() }, count: 1 })
        );
        assert_eq!(r.worst_classes[2].taken_for, None);
        let pairs: Vec<(usize, usize, usize)> =
            r.confusions.iter().map(|c| (c.truth.index, c.predicted.index, c.count)).collect();
        assert_eq!(pairs, vec![(0, 2, 1), (1, 2, 1)]);
        assert_eq!(acc.report(&labels, 1).worst_classes.len(), 1);
    }
}
