//! [`Network`]: a [`Plan`] bound to weights for one kernel set (`bound.rs`), with the
//! executor that runs it (`exec.rs`).

use crate::bound::{Bound, BoundPlan};
use crate::exec::{Executor, Observer};
use crate::plan::{Plan, Step};
use crate::{Backend, ModelError, Precision};
use resnet_kernels::Cpu;
use resnet_tensor::{Tensor, TensorView};
use resnet_weights::{Strictness, Tracked, WeightFile, WeightSource};
use std::sync::Arc;

/// A plan with its weights bound for one kernel set, and the threads and workspaces that run
/// it: the engine under [`crate::ResNet`] and [`crate::Edsr`], usable for any plan.
///
/// `Send + Sync`; clones share the weights, the threads and the workspaces.
///
/// ```
/// use resnet_models::{Backend, Network, resnet18, resnet_plan, random_tensor_map};
/// use resnet_tensor::Tensor;
///
/// let cfg = resnet18(10);
/// let weights = random_tensor_map(&cfg, 1)?;
/// let net = Network::load(resnet_plan(&cfg)?, &weights, Backend::Fast)?;
/// let x = Tensor::zeros(&[1, 3, 32, 32])?;
/// let logits = net.output(&x, "logits")?;
/// assert_eq!(logits.shape().dims(), &[1, 10]);
/// # Ok::<(), resnet_models::ModelError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Network {
    bound: Arc<BoundPlan>,
    exec: Executor,
}

impl Network {
    /// Bind `plan` to the tensors of `src` (named as the plan's steps say) for `backend`, on
    /// all cores. Every tensor is checked against the shape the plan implies.
    pub fn load(plan: Plan, src: &dyn WeightSource, backend: Backend) -> Result<Self, ModelError> {
        Self::load_with(plan, src, backend, Precision::F32)
    }

    /// [`Network::load`] with the convolutions in `precision` ([`Precision::Bf16`]: an
    /// [`ModelError::Unsupported`] error where the CPU lacks AVX512-BF16, or on
    /// [`Backend::Naive`]).
    pub fn load_with(
        plan: Plan,
        src: &dyn WeightSource,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let bound = BoundPlan::new(plan, src, backend, precision)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Self {
            bound: Arc::new(bound),
            exec: Executor::new(threads, Cpu::detect())?,
        })
    }

    /// The same network on `threads` worker threads (1: the calling thread only). The threads
    /// start with the first run, which reports a failure to start them as
    /// [`ModelError::Config`]; a `threads` of 0 is that error here.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, ModelError> {
        self.exec = Executor::new(threads, self.exec.cpu())?;
        Ok(self)
    }

    /// The same network dispatching to another instruction set (for testing the paths of
    /// older CPUs on one machine); results are within rounding of each other.
    pub fn with_cpu(mut self, cpu: Cpu) -> Result<Self, ModelError> {
        self.exec = Executor::new(self.exec.threads(), cpu)?;
        Ok(self)
    }

    /// Per step: the border of the bf16 map its output is kept in (`None`: f32).
    #[cfg(test)]
    pub(crate) fn storage(&self) -> &[Option<[usize; 2]>] {
        &self.bound.storage
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.bound.plan
    }

    /// The kernel set.
    pub fn backend(&self) -> Backend {
        self.bound.backend
    }

    /// The convolutions' arithmetic.
    pub fn precision(&self) -> Precision {
        self.bound.precision
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// The instruction set the fast kernels dispatch to.
    pub fn cpu(&self) -> Cpu {
        self.exec.cpu()
    }

    /// Every convolution in execution order with the algorithm the fast kernels run for it
    /// (`None` on the naive backend).
    pub fn conv_algorithms(&self) -> Option<Vec<(String, resnet_kernels::fast::ConvAlgo)>> {
        (self.backend() == Backend::Fast).then(|| {
            self.plan()
                .steps()
                .iter()
                .zip(&self.bound.steps)
                .filter_map(|(s, b)| match (s, b) {
                    (Step::Conv(c), Bound::FastConv(p)) => {
                        Some((c.conv.name.clone(), p.algorithm()))
                    }
                    (Step::Conv(c), Bound::Bf16Conv(p, _)) => {
                        Some((c.conv.name.clone(), p.algorithm()))
                    }
                    _ => None,
                })
                .collect()
        })
    }

    /// Run the plan on `x` (`[N, C, H, W]`, either layout), reporting every step to
    /// `observer`, which may stop the run early.
    pub fn run(&self, x: &Tensor, observer: &mut dyn Observer) -> Result<(), ModelError> {
        self.run_view(x.view(), observer)
    }

    /// [`Network::run`] on borrowed input (`[N, C, H, W]`, either layout): the elements are
    /// read in place, never copied into a tensor first (for callers that hold their data in
    /// another container, such as a NumPy array).
    pub fn run_view(
        &self,
        x: TensorView<'_>,
        observer: &mut dyn Observer,
    ) -> Result<(), ModelError> {
        self.exec.run(&self.bound, x, observer)
    }

    /// Run until the output `name` and return it (NCHW; `[N, C]` for pooled values).
    pub fn output(&self, x: &Tensor, name: &str) -> Result<Tensor, ModelError> {
        self.output_view(x.view(), name)
    }

    /// [`Network::output`] on borrowed input (see [`Network::run_view`]).
    pub fn output_view(&self, x: TensorView<'_>, name: &str) -> Result<Tensor, ModelError> {
        let mut keep = crate::exec::Keep::one(name);
        self.exec.run_keep(&self.bound, x, &mut keep)?;
        keep.take_one()
            .ok_or_else(|| ModelError::Config(format!("the plan has no output {name:?}")))
    }

    /// Run the whole plan once on `x`, timing every step (each convolution with its
    /// algorithm): the per-layer table of `cargo xtask bench`.
    pub fn profile(&self, x: &Tensor) -> Result<Vec<crate::LayerTime>, ModelError> {
        let mut p = crate::exec::Profile::default();
        self.run(x, &mut p)?;
        Ok(p.0)
    }

    /// Run the whole plan and return every output, in order, with its name.
    pub fn outputs(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>, ModelError> {
        let mut keep = crate::exec::Keep::all();
        self.exec.run_keep(&self.bound, x.view(), &mut keep)?;
        Ok(keep.into_all())
    }
}

/// Open a weights file, infer the configuration with `infer`, build with `load`, and insist
/// that every tensor of the file was used (but `num_batches_tracked`).
pub(crate) fn load_file_strict<C, M>(
    path: &std::path::Path,
    infer: impl FnOnce(&WeightFile) -> Result<C, ModelError>,
    load: impl FnOnce(&dyn WeightSource, &C) -> Result<M, ModelError>,
) -> Result<M, ModelError> {
    let file = WeightFile::open(path)?;
    let config = infer(&file)?;
    let tracked = Tracked::new(&file);
    let model = load(&tracked, &config)?;
    tracked.finish(Strictness::Strict)?;
    Ok(model)
}
