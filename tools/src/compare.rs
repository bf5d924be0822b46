//! `edgevit-tools compare`: how closely one model (say int8) follows another (say f32) on the
//! same inputs, and how accurate both are when the inputs carry labels.

use std::path::PathBuf;

use edgevit::eval::label_of;

use edgevit::inputs::{load, Input};
use edgevit::{Error, Model};

/// Running totals of the comparison.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fidelity {
    pub inputs: usize,
    pub top1_agree: usize,
    pub top5_overlap: usize,
    pub kl_sum: f64,
    pub cosine_sum: f64,
    pub labelled: usize,
    pub ref_correct: usize,
    pub cand_correct: usize,
}

impl Fidelity {
    pub fn add(&mut self, reference: &[f32], candidate: &[f32], label: Option<usize>) {
        self.inputs += 1;
        self.top1_agree += (argmax(reference) == argmax(candidate)) as usize;
        let (r5, c5) = (top_indices(reference, 5), top_indices(candidate, 5));
        self.top5_overlap += r5.iter().filter(|i| c5.contains(i)).count();
        self.kl_sum += kl_divergence(reference, candidate);
        self.cosine_sum += cosine(reference, candidate);
        if let Some(l) = label {
            self.labelled += 1;
            self.ref_correct += (argmax(reference) == l) as usize;
            self.cand_correct += (argmax(candidate) == l) as usize;
        }
    }

    pub fn report(&self) -> String {
        let n = self.inputs.max(1) as f64;
        let mut s = format!(
            "inputs:           {}\ntop-1 agreement:  {}/{} ({:.2}%)\ntop-5 overlap:    {:.3} of 5 on average\nmean KL(ref||cand): {:.6}\nmean cosine:      {:.6}\n",
            self.inputs,
            self.top1_agree,
            self.inputs,
            100.0 * self.top1_agree as f64 / n,
            self.top5_overlap as f64 / n,
            self.kl_sum / n,
            self.cosine_sum / n
        );
        if self.labelled > 0 {
            let l = self.labelled as f64;
            s += &format!(
                "accuracy:         reference {:.2}%, candidate {:.2}% (on {} labelled inputs)\n",
                100.0 * self.ref_correct as f64 / l,
                100.0 * self.cand_correct as f64 / l,
                self.labelled
            );
        }
        s
    }
}

pub fn argmax(v: &[f32]) -> usize {
    top_indices(v, 1).first().copied().unwrap_or(0)
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
pub fn top_indices(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = l.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    l.iter().map(|&v| v as f64 - lse).collect()
}

/// KL(p || q) of the softmax distributions of two logit vectors, in nats.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p_logits), log_softmax(q_logits));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum::<f64>().max(0.0)
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

/// Runs both models on every input. Inputs that cannot be read are reported through
/// `on_error` and skipped; `on_done` is called after each input.
pub fn compare(
    reference: &Model,
    candidate: &Model,
    inputs: &[PathBuf],
    mut on_error: impl FnMut(String),
    mut on_done: impl FnMut(),
) -> Fidelity {
    let (mut sr, mut sc) = (reference.session(), candidate.session());
    let mut f = Fidelity::default();
    for path in inputs {
        let mut run = || -> Result<(Vec<f32>, Vec<f32>), Error> {
            let r = reference.forward(&load(&Input::File(path.clone()), reference.config())?, &mut sr)?.to_vec();
            let c = candidate.forward(&load(&Input::File(path.clone()), candidate.config())?, &mut sc)?.to_vec();
            Ok((r, c))
        };
        match run() {
            Ok((r, c)) => f.add(&r, &c, label_of(path, reference.labels())),
            Err(e) => on_error(e.to_string()),
        }
        on_done();
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_hand_worked_cases() {
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).abs() < 1e-12);
        // p = softmax([0, ln 3]) = (1/4, 3/4); q = uniform: KL = 1/4 ln(1/2) + 3/4 ln(3/2).
        let want = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!((kl_divergence(&[0.0, 3f32.ln()], &[5.0, 5.0]) - want).abs() < 1e-6);
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(top_indices(&[0.1, 0.9, 0.5, 0.9], 3), vec![1, 3, 2]);
        let mut f = Fidelity::default();
        f.add(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[0.0, 1.0, 2.0, 3.0, 5.5, 5.0], Some(5));
        assert_eq!((f.top1_agree, f.top5_overlap, f.ref_correct, f.cand_correct), (0, 5, 1, 0));
    }
}
