//! Write seeded random weights of a named architecture as safetensors (torchvision names):
//! `cargo run --release -p resnet-models --example write_random -- resnext50_32x4d out.safetensors`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(out)) = (a.first(), a.get(1)) else {
        return Err("usage: write_random ARCH OUT.safetensors".into());
    };
    let cfg = resnet_models::ResNetConfig::by_name(name, 1000).ok_or("unknown architecture")?;
    let map = resnet_models::random_tensor_map(&cfg, 0)?;
    std::fs::write(out, map.to_safetensors_bytes(None)?)?;
    Ok(())
}
