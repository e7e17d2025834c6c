//! Every optimizer follows PyTorch's (or transformers') trajectory: four steps with fixed gradients
//! from the same start, compared after each step (fixture by `tools/make_optim_fixtures.py`).

use candle_core::{Device, Tensor};
use lingo_nn::params::assign;
use lingo_nn::{Init, ParamStore};
use lingo_train::grads::Gradients;
use lingo_train::{DecayPolicy, Optimizer, OptimizerConfig};
use std::collections::BTreeMap;

type Values = BTreeMap<String, Vec<f32>>;

fn fixture() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/optim/trajectories.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

#[test]
fn every_optimizer_matches_its_reference_step_by_step() -> anyhow::Result<()> {
    let f = fixture();
    let shapes: BTreeMap<String, Vec<usize>> = serde_json::from_value(f["shapes"].clone())?;
    let init: Values = serde_json::from_value(f["init"].clone())?;
    let grads: Vec<Values> = serde_json::from_value(f["grads"].clone())?;
    for case in f["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let config: OptimizerConfig = serde_json::from_value(case["optimizer"].clone())?;
        let store = ParamStore::new(0, &Device::Cpu);
        for (param, shape) in &shapes {
            let (parent, leaf) = param.split_once('.').expect("dotted");
            store.root().sub(parent).get(leaf, shape, Init::Zeros)?;
            let var = store.get(param).expect("created");
            assign(
                &var,
                &Tensor::from_vec(init[param].clone(), shape.as_slice(), &Device::Cpu)?,
            )?;
        }
        let mut opt = Optimizer::new(config.clone(), &store, DecayPolicy::All, &[]);
        let after: Vec<Values> = serde_json::from_value(case["after"].clone())?;
        for (step, (g, expected)) in grads.iter().zip(&after).enumerate() {
            let grads = Gradients {
                grads: opt
                    .params()
                    .iter()
                    .map(|(n, _)| {
                        Tensor::from_vec(g[n].clone(), shapes[n].as_slice(), &Device::Cpu).map(Some)
                    })
                    .collect::<candle_core::Result<_>>()?,
            };
            opt.step(step, &grads, config.lr(), 1.0)?;
            for (n, var) in opt.params() {
                let got = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                for (i, (a, b)) in got.iter().zip(&expected[&n]).enumerate() {
                    let tol = 1e-5 * b.abs().max(1.0);
                    assert!(
                        (a - b).abs() <= tol,
                        "{name}, step {}: {n}[{i}] is {a}, PyTorch has {b}",
                        step + 1
                    );
                }
            }
        }
    }
    Ok(())
}
