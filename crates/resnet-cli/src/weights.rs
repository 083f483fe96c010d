//! Resolving `--weights`: a local path, or `hf:REPO[/FILE]` through the Hugging Face Hub cache.

use anyhow::{Result, bail};
use std::path::PathBuf;

/// A local path for a weights argument, downloading `hf:` references (cached).
pub fn resolve(spec: &str) -> Result<PathBuf> {
    let Some(rest) = spec.strip_prefix("hf:") else {
        let p = PathBuf::from(spec);
        if !p.exists() {
            bail!("weights file {spec} does not exist");
        }
        if p.is_dir() {
            bail!("{spec} is a directory, not a weights file: pass the file inside it");
        }
        return Ok(p);
    };
    let mut parts = rest.splitn(3, '/');
    let (owner, name) = match (parts.next(), parts.next()) {
        (Some(o), Some(n)) if !o.is_empty() && !n.is_empty() => (o, n),
        _ => bail!("{spec:?} is not hf:OWNER/REPO[/FILE]"),
    };
    let file = parts
        .next()
        .filter(|f| !f.is_empty())
        .unwrap_or("model.safetensors");
    download(&format!("{owner}/{name}"), file)
}

#[cfg(feature = "hf-hub")]
fn download(repo: &str, file: &str) -> Result<PathBuf> {
    use anyhow::{Context, anyhow};
    // A file already in the cache needs no network.
    if let Some(p) = hf_hub::Cache::default().model(repo.to_string()).get(file) {
        return Ok(p);
    }
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_progress(true)
        .build()
        .context("cannot use the Hugging Face Hub")?;
    // The advice comes after the cause, so the cause (with its own causes) goes in the middle.
    api.model(repo.to_string()).get(file).map_err(|e| {
        anyhow!(
            "cannot download {file} from hf:{repo} ({}); offline, download it elsewhere and pass \
             the local file with --weights PATH",
            crate::one_line(&e.into())
        )
    })
}

#[cfg(not(feature = "hf-hub"))]
fn download(repo: &str, file: &str) -> Result<PathBuf> {
    bail!(
        "hf:{repo}/{file}: this build has no Hugging Face Hub support (feature `hf-hub`); pass a \
         local file with --weights PATH"
    )
}
