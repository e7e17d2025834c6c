//! Distillation on tiny checkpoints: the student takes every other teacher layer, the soft loss is
//! T²·KL with the gradient T·(p_student − p_teacher), and a distilled student learns the task.

mod toy;

use candle_core::{Device, Tensor, Var};
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_nn::params::read_safetensors;
use lingo_tasks::distillation::{
    cosine_loss, soft_loss, student_from_teacher, DistillLoss, Distillation,
};
use lingo_tasks::ClassifyTask;
use std::path::Path;
use toy::{fixture, quiet, recipe, toy_data};

#[test]
fn the_student_takes_every_other_teacher_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("student");
    let taken = student_from_teacher(
        &fixture("bert-cls"),
        &serde_json::json!({"num_hidden_layers": 1}),
        &out,
    )
    .unwrap();
    assert_eq!(taken, vec![0]);
    let teacher = AutoModel::load(&fixture("bert-cls"), &LoadOptions::default()).unwrap();
    let student = read_safetensors(&out.join("model.safetensors"), &Device::Cpu).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 1);
    assert!(!student.keys().any(|k| k.contains(".layer.1.")));
    for (name, var) in teacher.store.named() {
        if name.contains(".layer.1.") {
            continue;
        }
        let got = &student[&name];
        let d = (got - var.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }
    // Wider or deeper students cannot come from the teacher's layers.
    let err = student_from_teacher(
        &fixture("bert-cls"),
        &serde_json::json!({"hidden_size": 64}),
        &out,
    )
    .unwrap_err();
    assert!(err.to_string().contains("hidden size"), "{err}");
    let err = student_from_teacher(
        &fixture("bert-cls"),
        &serde_json::json!({"num_hidden_layers": 3}),
        &out,
    )
    .unwrap_err();
    assert!(err.to_string().contains("num_hidden_layers 3"), "{err}");
}

#[test]
fn the_soft_loss_is_scaled_kl_with_its_gradient() {
    let dev = Device::Cpu;
    let s = [[1.0f32, -0.5, 2.0], [0.3, 0.2, -1.0]];
    let t = [[0.5f32, 0.5, 1.0], [-1.0, 2.0, 0.0]];
    let student = Var::new(&s, &dev).unwrap();
    let teacher = Tensor::new(&t, &dev).unwrap();
    let weights = Tensor::new(&[1.0f32, 1.0], &dev).unwrap();
    let temp = 2.0;
    let loss = soft_loss(student.as_tensor(), &teacher, &weights, temp).unwrap();
    let softmax = |row: &[f32; 3]| -> Vec<f64> {
        let e: Vec<f64> = row.iter().map(|&x| (x as f64 / temp).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter().map(|x| x / z).collect()
    };
    let mut want = 0.0;
    let mut grads = Vec::new();
    for r in 0..2 {
        let (ps, pt) = (softmax(&s[r]), softmax(&t[r]));
        want += (0..3).map(|i| pt[i] * (pt[i] / ps[i]).ln()).sum::<f64>();
        grads.extend((0..3).map(|i| temp * (ps[i] - pt[i]) / 2.0));
    }
    let want = want / 2.0 * temp * temp;
    let got = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    let g = loss.backward().unwrap();
    let g = g
        .get(student.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (a, b) in g.iter().zip(&grads) {
        assert!((*a as f64 - b).abs() < 1e-5, "gradient {a} vs {b}");
    }
    // Identical outputs: no loss. Padding rows (weight 0) do not count.
    let same = soft_loss(&teacher, &teacher, &weights, temp).unwrap();
    assert!(same.to_scalar::<f32>().unwrap().abs() < 1e-6);
    let first = Tensor::new(&[1.0f32, 0.0], &dev).unwrap();
    let one = soft_loss(student.as_tensor(), &teacher, &first, temp).unwrap();
    let (ps, pt) = (softmax(&s[0]), softmax(&t[0]));
    let kl0: f64 = (0..3).map(|i| pt[i] * (pt[i] / ps[i]).ln()).sum::<f64>() * temp * temp;
    assert!((one.to_scalar::<f32>().unwrap() as f64 - kl0).abs() < 1e-5);
    // Cosine: 0 for parallel states, 1 for orthogonal ones.
    let a = Tensor::new(&[[1.0f32, 0.0], [2.0, 2.0]], &dev).unwrap();
    let b = Tensor::new(&[[0.0f32, 3.0], [1.0, 1.0]], &dev).unwrap();
    let c = cosine_loss(&a, &b, &weights)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((c - 0.5).abs() < 1e-5, "{c}");
}

fn accuracy(out: &Path) -> f64 {
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = log
        .lines()
        .rfind(|l| l.contains("accuracy"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    last["metrics"]["accuracy"].as_f64().unwrap()
}

#[test]
fn a_distilled_student_learns_the_teachers_task() {
    let tmp = tempfile::tempdir().unwrap();
    let train = toy_data(tmp.path(), "train.tsv", 300, 1);
    let valid = toy_data(tmp.path(), "valid.tsv", 100, 2);
    let teacher_dir = tmp.path().join("teacher");
    let mut teacher =
        ClassifyTask::new(&fixture("bert"), &train, Some(&valid), recipe(80)).unwrap();
    quiet(&teacher.recipe, &teacher_dir)
        .run(&mut teacher, false)
        .unwrap();
    assert!(accuracy(&teacher_dir) >= 0.95);

    let init = tmp.path().join("student-init");
    student_from_teacher(
        &teacher_dir,
        &serde_json::json!({"num_hidden_layers": 1}),
        &init,
    )
    .unwrap();
    let student = ClassifyTask::new(&init, &train, Some(&valid), recipe(60)).unwrap();
    let loss = DistillLoss {
        cosine: 0.5,
        ..DistillLoss::default()
    };
    let mut task = Distillation::new(student, &teacher_dir, loss).unwrap();
    let out = tmp.path().join("student");
    quiet(&task.student.recipe, &out)
        .run(&mut task, false)
        .unwrap();
    let acc = accuracy(&out);
    assert!(acc >= 0.95, "student accuracy {acc}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 1);

    // A teacher with other labels is refused.
    let other = tmp.path().join("other.tsv");
    std::fs::write(&other, "sentence\tlabel\nthe cat\tpos\nthe dog\tneg\n").unwrap();
    let student = ClassifyTask::new(&init, &other, Some(&other), recipe(1)).unwrap();
    let err = Distillation::new(student, &teacher_dir, DistillLoss::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("labels"), "{err}");
}
