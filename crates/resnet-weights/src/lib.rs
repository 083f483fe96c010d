//! `resnet-weights`: pretrained weights from safetensors files and PyTorch checkpoints,
//! checked and named.
//!
//! [`WeightFile`] opens a `.safetensors` file memory-mapped, validates its header (with a size
//! limit, before anything is allocated from it), and hands out f32 [`Tensor`]s by name with
//! the shape the caller expects, converting F32, F16, BF16 and F64 on the way. It opens the
//! `.pth`/`.pt`/`.bin` files of `torch.save` the same way ([`WeightFormat`]): the zip format
//! (storages used in place, memory-mapped) and the legacy one, a state_dict or one wrapped in
//! `{"state_dict": …}`/`{"model": …}` with or without DataParallel's `module.` prefix. Their
//! pickle is read by a restricted reader that builds tensors and containers only and refuses
//! every other global ([`WeightError::RefusedGlobal`]: `refusing pickle global posix.system`),
//! so a hostile checkpoint runs nothing. [`WeightFile::to_safetensors`] converts one. Key names of
//! torchvision and timm (`layer1.0.conv1.weight`) and of HF transformers (`microsoft/resnet-*`:
//! `resnet.encoder.stages.0.layers.0.layer.0.convolution.weight`) are mapped to one internal
//! scheme, torchvision's, so models ask for one set of names. Integer tensors such as
//! `num_batches_tracked` are accepted and never required.
//!
//! Every failure is a [`WeightError`] naming the key, the expected and the found value.
//! [`Tracked`] records which keys a model asked for, so unused keys can be reported.
//!
//! ```no_run
//! use resnet_weights::{Tracked, WeightFile, WeightSource};
//!
//! let file = WeightFile::open("resnet18.safetensors")?;
//! let weights = Tracked::new(&file);
//! let conv1 = weights.tensor("conv1.weight", &[64, 3, 7, 7])?;
//! assert_eq!(conv1.shape().dims(), &[64, 3, 7, 7]);
//! // ... ask for the rest, then insist that nothing was left over:
//! weights.finish(resnet_weights::Strictness::Strict)?;
//! # Ok::<(), resnet_weights::WeightError>(())
//! ```

// The memory map lives behind the safe `resnet_mmap::MappedFile`: no `unsafe` here.
#![forbid(unsafe_code)]

mod error;
mod file;
mod names;
mod source;
mod torch;
mod write;

pub use error::WeightError;
pub use file::{MAX_HEADER_BYTES, TensorInfo, WeightDtype, WeightFile, WeightFormat};
pub use names::{NameScheme, to_canonical};
pub use resnet_tensor::Tensor;
pub use source::{Prefixed, Strictness, TensorMap, Tracked, WeightSource, is_ignorable};
pub use write::{write_safetensors, write_safetensors_with_counters};
