//! Classify image files with an .evit model, using edgevit as a library.
//!
//! ```sh
//! cargo run --release -p edgevit-tools -- quantize demo/vit-mnist -o demo.evit
//! cargo run --release --example classify -- demo.evit demo/examples/digit-3.png
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((model_path, images)) = args.split_first().filter(|(_, rest)| !rest.is_empty()) else {
        eprintln!("usage: classify MODEL.evit IMAGE...");
        return ExitCode::FAILURE;
    };
    let model = match edgevit::Model::open(model_path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for path in images {
        match edgevit::load_image(path.as_ref()).and_then(|img| model.classify(&img, 3)) {
            Ok(top) => {
                let best: Vec<String> = top.iter().map(|p| format!("{} {:.1}%", p.label, p.prob * 100.0)).collect();
                println!("{path}: {}", best.join(", "));
            }
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
