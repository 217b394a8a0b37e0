//! Adam and AdamW with f32 master weights, per-parameter weight-decay groups, and the gradient
//! utilities of a training step (global-norm clipping, loss-scale unscaling, finiteness).
//!
//! Burn's own `AdamW` decays every parameter and clips per tensor; HF's recipe exempts biases
//! and LayerNorm parameters from decay and clips by the global norm, and Keras' `Adam` places ε
//! differently. This optimizer does all three, working directly on a module and Burn's
//! [`GradientsParams`], with the moment estimates kept as f32 tensors on the parameters' device.

use bertlab_models::ops::adam::{AdamOperand, AdamUpdated};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

pub use bertlab_run::OptimizerKind;

/// Where ε enters the Adam update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpsilonForm {
    /// PyTorch: `m̂ / (√v̂ + ε)` with both moments bias-corrected.
    BiasCorrected,
    /// Keras/TensorFlow ("ε-hat" of Kingma & Ba): `lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε)`.
    Hat,
}

/// Which parameters weight decay applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecayPolicy {
    /// Every parameter (`torch.optim.AdamW(model.parameters())`).
    All,
    /// All but biases and normalisation weights (HF Trainer's `get_decay_parameter_names`).
    SkipBiasAndNorm,
}

/// Hyper-parameters of [`Adam`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Numerical-stability constant.
    pub epsilon: f64,
    /// Where ε goes.
    pub epsilon_form: EpsilonForm,
    /// Decoupled weight decay (0 = none): `p ← p·(1 − lr·wd)` before the Adam update.
    pub weight_decay: f64,
    /// Which parameters are decayed.
    pub decay_policy: DecayPolicy,
}

impl AdamSettings {
    /// `keras.optimizers.Adam()` defaults.
    pub fn keras_adam() -> AdamSettings {
        AdamSettings {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            epsilon_form: EpsilonForm::Hat,
            weight_decay: 0.0,
            decay_policy: DecayPolicy::All,
        }
    }

    /// HF Trainer's AdamW: ε 1e-8, `weight_decay`, no decay on biases and LayerNorm.
    pub fn hf_adamw(weight_decay: f64) -> AdamSettings {
        AdamSettings {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            epsilon_form: EpsilonForm::BiasCorrected,
            weight_decay,
            decay_policy: DecayPolicy::SkipBiasAndNorm,
        }
    }

    /// `(step_size, sqrt_v_scale)` of optimizer step `t` (1-based) at learning rate `lr`: the
    /// update is `step_size · m / (√v · sqrt_v_scale + ε)`, with ε where [`EpsilonForm`] puts it.
    pub fn update_factors(&self, lr: f64, t: u64) -> (f64, f64) {
        let t = t as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2 = 1.0 - self.beta2.powi(t);
        match self.epsilon_form {
            EpsilonForm::BiasCorrected => (lr / bias1, 1.0 / bias2.sqrt()),
            EpsilonForm::Hat => (lr * bias2.sqrt() / bias1, 1.0),
        }
    }

    /// The settings of `kind`; `weight_decay` overrides the recipe's default when given.
    pub fn for_kind(kind: OptimizerKind, weight_decay: Option<f64>) -> AdamSettings {
        match kind {
            OptimizerKind::Adam => {
                AdamSettings { weight_decay: weight_decay.unwrap_or(0.0), ..AdamSettings::keras_adam() }
            }
            OptimizerKind::Adamw => AdamSettings::hf_adamw(weight_decay.unwrap_or(0.01)),
        }
    }
}

/// Adam/AdamW over the float parameters of a module.
pub struct Adam<B: AutodiffBackend> {
    settings: AdamSettings,
    first_moments: GradientsParams,
    second_moments: GradientsParams,
    no_decay: HashSet<ParamId>,
    steps: u64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> Adam<B> {
    /// An optimizer for `module`'s parameters (their names decide the decay groups).
    pub fn new<M: AutodiffModule<B>>(settings: AdamSettings, module: &M) -> Adam<B> {
        let groups = DecayGroups::of::<B, M>(module);
        let no_decay = match settings.decay_policy {
            DecayPolicy::All => HashSet::new(),
            DecayPolicy::SkipBiasAndNorm => groups.no_decay.into_iter().map(|(id, _)| id).collect(),
        };
        Adam {
            settings,
            first_moments: GradientsParams::new(),
            second_moments: GradientsParams::new(),
            no_decay,
            steps: 0,
            _backend: std::marker::PhantomData,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AdamSettings {
        &self.settings
    }

    /// Optimizer steps applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Number of parameter tensors exempt from weight decay.
    pub fn no_decay_count(&self) -> usize {
        self.no_decay.len()
    }

    /// One update of `module` with learning rate `lr` from `grads`, each gradient multiplied by
    /// `grad_multiplier` first (the product of loss-scale unscaling and clipping; 1 for none).
    pub fn step<M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        module: M,
        mut grads: GradientsParams,
        grad_multiplier: f64,
    ) -> M {
        self.steps += 1;
        let s = self.settings;
        let (step_size, sqrt_v_scale) = s.update_factors(lr, self.steps);
        let mut mapper = AdamMapper::<B> {
            first: &mut self.first_moments,
            second: &mut self.second_moments,
            grads: &mut grads,
            no_decay: &self.no_decay,
            settings: s,
            step_size,
            sqrt_v_scale,
            decay_factor: 1.0 - lr * s.weight_decay,
            grad_multiplier,
            _backend: std::marker::PhantomData,
        };
        module.map(&mut mapper)
    }

    /// One update of `module` from `grads` with factors decided on the device: no host wait
    /// ([`crate::step_state`]). The step count is the device's; [`Adam::set_steps`] mirrors it
    /// when it is read back.
    pub fn step_on_device<M: AutodiffModule<B>>(
        &mut self,
        module: M,
        mut grads: GradientsParams,
        factors: &DeviceFactors<B::InnerBackend>,
    ) -> M {
        // Two passes, so that the backend can update every tensor in a few launches: collect
        // the operands, update them all in one op of the seam, then put the results in place.
        let mut collect = CollectOperands::<B> {
            first: &mut self.first_moments,
            second: &mut self.second_moments,
            grads: &mut grads,
            no_decay: &self.no_decay,
            decays: self.settings.weight_decay != 0.0,
            ids: Vec::new(),
            operands: Vec::new(),
        };
        module.visit(&mut collect);
        let ids = collect.ids;
        let updated =
            bertlab_models::ops::adam_update_many(collect.operands, factors.packed(), self.settings.epsilon);
        let mut place = PlaceUpdates::<B> {
            first: &mut self.first_moments,
            second: &mut self.second_moments,
            updated: ids.into_iter().zip(updated).collect(),
        };
        module.map(&mut place)
    }

    /// Set the count of steps applied (read back from the device).
    pub(crate) fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }
}

/// The factors of one step's update, decided on the device ([`crate::step_state`]) and packed
/// in one `[ADAM_FACTORS]` tensor in the order `bertlab_models::ops::adam` takes them: the
/// update of each parameter is `m ← β₁'·m + g₁'·g`, `v ← β₂'·v + g₂'·g²`,
/// `p ← decay·p − step_size · m / (√v · sqrt_v_scale + ε)` (decay only where weight decay
/// applies). A skipped step has `β' = 1`, `g' = 0`, `step_size = 0`, `decay = 1` and the skip
/// flag 1: an update that changes nothing, with the non-finite gradients masked to 0 so that no
/// NaN reaches the moments.
pub struct DeviceFactors<B: Backend> {
    packed: Tensor<B, 1>,
}

impl<B: Backend> DeviceFactors<B> {
    /// Factors already packed as `bertlab_models::ops::adam::ADAM_FACTORS` says.
    pub(crate) fn from_packed(packed: Tensor<B, 1>) -> DeviceFactors<B> {
        debug_assert_eq!(packed.dims(), [bertlab_models::ops::adam::ADAM_FACTORS]);
        DeviceFactors { packed }
    }

    /// The packed factors.
    pub fn packed(&self) -> Tensor<B, 1> {
        self.packed.clone()
    }
}

/// The optimizer's state for one parameter: its dotted path, shape and moments (row-major f32),
/// as a checkpoint stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct MomentState {
    /// Dotted path of the parameter in the module (`encoder.layers.0.attention.query.weight`).
    pub path: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// First moment.
    pub first: Vec<f32>,
    /// Second moment.
    pub second: Vec<f32>,
}

impl<B: AutodiffBackend> Adam<B> {
    /// The moments of every parameter of `module` that has them (those updated at least once),
    /// by parameter path, in the module's order.
    pub fn moments<M: AutodiffModule<B>>(&self, module: &M) -> Vec<MomentState> {
        struct Collect<'a> {
            path: Vec<String>,
            first: &'a GradientsParams,
            second: &'a GradientsParams,
            out: Vec<MomentState>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
            fn enter_module(&mut self, name: &str, _container_type: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let (Some(m), Some(v)) = (
                    self.first.get::<B::InnerBackend, D>(param.id),
                    self.second.get::<B::InnerBackend, D>(param.id),
                ) else {
                    return;
                };
                let values = |t: Tensor<B::InnerBackend, D>| {
                    t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 moments")
                };
                self.out.push(MomentState {
                    path: self.path.join("."),
                    shape: m.dims().to_vec(),
                    first: values(m),
                    second: values(v),
                });
            }
        }
        let mut c = Collect {
            path: Vec::new(),
            first: &self.first_moments,
            second: &self.second_moments,
            out: Vec::new(),
        };
        module.visit(&mut c);
        c.out
    }

    /// Put back the moments and the step count of a checkpoint, matching parameters of
    /// `module` by path. Errors name a path that is missing or whose shape differs.
    pub fn restore<M: AutodiffModule<B>>(
        &mut self,
        module: &M,
        steps: u64,
        moments: Vec<MomentState>,
        device: &B::Device,
    ) -> Result<(), String> {
        struct Restore<'a, B: AutodiffBackend> {
            path: Vec<String>,
            by_path: std::collections::HashMap<String, MomentState>,
            first: &'a mut GradientsParams,
            second: &'a mut GradientsParams,
            device: &'a B::Device,
            error: Option<String>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Restore<'_, B> {
            fn enter_module(&mut self, name: &str, _container_type: &str) {
                self.path.push(name.to_string());
            }
            fn exit_module(&mut self, _name: &str, _container_type: &str) {
                self.path.pop();
            }
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let path = self.path.join(".");
                let Some(state) = self.by_path.remove(&path) else { return };
                let dims = param.val().dims();
                if state.shape != dims {
                    self.error.get_or_insert(format!(
                        "optimizer state of {path} has shape {:?}, the parameter {:?}",
                        state.shape, dims
                    ));
                    return;
                }
                let tensor = |values: Vec<f32>| {
                    Tensor::<B::InnerBackend, D>::from_data(
                        burn::tensor::TensorData::new(values, dims),
                        self.device,
                    )
                };
                self.first.register::<B::InnerBackend, D>(param.id, tensor(state.first));
                self.second.register::<B::InnerBackend, D>(param.id, tensor(state.second));
            }
        }
        let mut r = Restore::<B> {
            path: Vec::new(),
            by_path: moments.into_iter().map(|m| (m.path.clone(), m)).collect(),
            first: &mut self.first_moments,
            second: &mut self.second_moments,
            device,
            error: None,
        };
        module.visit(&mut r);
        if let Some(e) = r.error {
            return Err(e);
        }
        if let Some(path) = r.by_path.keys().next() {
            return Err(format!("optimizer state for {path}, which the model does not have"));
        }
        self.steps = steps;
        Ok(())
    }
}

struct AdamMapper<'a, B: AutodiffBackend> {
    first: &'a mut GradientsParams,
    second: &'a mut GradientsParams,
    grads: &'a mut GradientsParams,
    no_decay: &'a HashSet<ParamId>,
    settings: AdamSettings,
    step_size: f64,
    sqrt_v_scale: f64,
    decay_factor: f64,
    grad_multiplier: f64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for AdamMapper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            // Frozen or unused parameter: untouched, like torch's `p.grad is None`.
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        // A gradient in a product's dtype (`ops::param_cast`), widened first.
        let grad = match grad.dtype() == tensor.dtype() {
            true => grad,
            false => grad.cast(tensor.dtype()),
        };
        let s = &self.settings;
        let k = self.grad_multiplier;
        // Owned tensors let CPU backends update in place (one allocation per temporary).
        let m = match self.first.remove::<B::InnerBackend, D>(id) {
            Some(m) => m.mul_scalar(s.beta1).add(grad.clone().mul_scalar((1.0 - s.beta1) * k)),
            None => grad.clone().mul_scalar((1.0 - s.beta1) * k),
        };
        let g2 = grad.square().mul_scalar((1.0 - s.beta2) * k * k);
        let v = match self.second.remove::<B::InnerBackend, D>(id) {
            Some(v) => v.mul_scalar(s.beta2).add(g2),
            None => g2,
        };
        let denom = v.clone().sqrt().mul_scalar(self.sqrt_v_scale).add_scalar(s.epsilon);
        let update = m.clone().div(denom).mul_scalar(self.step_size);
        let mut value: Tensor<B::InnerBackend, D> = tensor.inner();
        if s.weight_decay != 0.0 && !self.no_decay.contains(&id) {
            value = value.mul_scalar(self.decay_factor);
        }
        let value = value.sub(update);
        self.first.register::<B::InnerBackend, D>(id, m);
        self.second.register::<B::InnerBackend, D>(id, v);
        let mut tensor = Tensor::<B, D>::from_inner(value);
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The first pass of [`Adam::step_on_device`]: each parameter with a gradient, its gradient
/// and moments (taken out of their maps), in the module's order.
struct CollectOperands<'a, B: AutodiffBackend> {
    first: &'a mut GradientsParams,
    second: &'a mut GradientsParams,
    grads: &'a mut GradientsParams,
    no_decay: &'a HashSet<ParamId>,
    decays: bool,
    ids: Vec<ParamId>,
    operands: Vec<AdamOperand<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectOperands<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let id = param.id;
        // A frozen or unused parameter has no gradient and stays as it is, like torch's
        // `p.grad is None`.
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else { return };
        let prim = |t: Tensor<B::InnerBackend, D>| t.into_primitive().tensor();
        let first = self.first.remove::<B::InnerBackend, D>(id);
        let second = self.second.remove::<B::InnerBackend, D>(id);
        self.ids.push(id);
        self.operands.push(AdamOperand {
            value: prim(param.val().inner()),
            grad: prim(grad),
            moments: first.zip(second).map(|(m, v)| (prim(m), prim(v))),
            decays: self.decays && !self.no_decay.contains(&id),
            copy: None,
        });
    }
}

/// The second pass of [`Adam::step_on_device`]: each updated parameter replaced by its new
/// value (tracked again where it was), its moments kept for the next step.
struct PlaceUpdates<'a, B: AutodiffBackend> {
    first: &'a mut GradientsParams,
    second: &'a mut GradientsParams,
    updated: HashMap<ParamId, AdamUpdated<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for PlaceUpdates<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(AdamUpdated { value, first: m, second: v, .. }) = self.updated.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let float = |t| Tensor::<B::InnerBackend, D>::from_primitive(TensorPrimitive::Float(t));
        self.first.register::<B::InnerBackend, D>(id, float(m));
        self.second.register::<B::InnerBackend, D>(id, float(v));
        let mut value = Tensor::<B, D>::from_inner(float(value));
        if tensor.is_require_grad() {
            value = value.require_grad();
        }
        Param::from_mapped_value(id, value, mapper)
    }
}

/// The module's float parameters split by whether weight decay applies (HF's rule: biases and
/// normalisation layers are exempt; by name, with rank-1 tensors as the fallback, since in
/// BERT-family models every rank-1 parameter is a bias or a norm weight).
#[derive(Debug, Default, Clone)]
pub struct DecayGroups {
    /// Parameters that are decayed, with their dotted paths.
    pub decay: Vec<(ParamId, String)>,
    /// Parameters that are not, with their dotted paths.
    pub no_decay: Vec<(ParamId, String)>,
}

impl DecayGroups {
    /// Classify the parameters of `module`.
    pub fn of<B: Backend, M: burn::module::Module<B>>(module: &M) -> DecayGroups {
        let mut v = DecayVisitor { path: Vec::new(), groups: DecayGroups::default() };
        module.visit(&mut v);
        v.groups
    }
}

struct DecayVisitor {
    /// (field name, type of the struct holding the field).
    path: Vec<(String, String)>,
    groups: DecayGroups,
}

impl<B: Backend> ModuleVisitor<B> for DecayVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let name = self.path.last().map(|(n, _)| n.as_str()).unwrap_or("");
        let in_norm = self.path.iter().any(|(n, ty)| {
            let ty = ty.rsplit(':').next().unwrap_or(ty).to_ascii_lowercase();
            let n = n.to_ascii_lowercase();
            // The holder of the param's field is the norm module itself.
            ty.ends_with("norm") || n.contains("layer_norm") || n.contains("layernorm")
        });
        let exempt = D == 1 || name == "bias" || in_norm;
        let dotted = self.path.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(".");
        if exempt {
            self.groups.no_decay.push((param.id, dotted));
        } else {
            self.groups.decay.push((param.id, dotted));
        }
    }
}

/// Σ‖g‖² over all gradients of `module`, as one scalar tensor (read it with one sync), summed in
/// f32 (a gradient in a product's dtype, `bertlab_models::ops::param_cast`, is widened first).
/// Non-finite gradients give a NaN or infinite result.
///
/// The seam's [`bertlab_models::ops::sum_squares_many`]: on a CubeCL backend a few launches
/// for all gradients (as many tensors a launch as the device's bindings allow, then one
/// reduction); elsewhere the gradients grouped by shape, each group's squares added in one
/// element-wise chain (one fused kernel under fusion) and summed once. Squaring and summing
/// each tensor on its own took ~3.4 launches a tensor (354 of a DistilBERT f16 step on
/// lavapipe, issue 24).
pub fn grad_sq_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    type Float<B> = FloatTensor<<B as AutodiffBackend>::InnerBackend>;
    struct Collect<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        /// The gradients in the module's order.
        tensors: Vec<Float<B>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                self.tensors.push(g.into_primitive().tensor());
            }
        }
    }
    let mut v = Collect::<B> { grads, tensors: Vec::new() };
    module.visit(&mut v);
    // A gradient in a product's dtype (`ops::param_cast`) is squared in f32, where a
    // loss-scaled f16 gradient's square cannot overflow: the seam's op does, in a few launches
    // on a backend with a multi-tensor kernel.
    bertlab_models::ops::sum_squares_many::<B::InnerBackend>(v.tensors)
}

/// The factor `torch.nn.utils.clip_grad_norm_` scales gradients by: `min(1, max_norm / (norm +
/// 1e-6))`.
pub fn clip_coefficient(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
    use burn::tensor::TensorData;

    type AB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Tiny<B: Backend> {
        dense: Linear<B>,
        norm: LayerNorm<B>,
    }

    fn tiny(device: &burn::tensor::Device<AB>) -> Tiny<AB> {
        let dense: Linear<AB> = LinearConfig::new(3, 2).init(device);
        let w = Tensor::<AB, 2>::from_data(
            TensorData::new(vec![0.5f32, -1.0, 0.25, 2.0, -0.75, 1.5], [3, 2]),
            device,
        );
        let b = Tensor::<AB, 1>::from_data(TensorData::new(vec![0.1f32, -0.2], [2]), device);
        let dense = Linear {
            weight: Param::initialized(dense.weight.id, w.require_grad()),
            bias: Some(Param::initialized(dense.bias.unwrap().id, b.require_grad())),
        };
        Tiny { dense, norm: LayerNormConfig::new(2).init(device) }
    }

    fn loss(m: &Tiny<AB>, device: &burn::tensor::Device<AB>) -> Tensor<AB, 1> {
        let x = Tensor::<AB, 2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, -1.0, 0.5, -0.5, 3.0], [2, 3]),
            device,
        );
        let y = m.norm.forward(m.dense.forward(x));
        (y.clone() * y.clone()).sum() + m.dense.forward(Tensor::<AB, 2>::ones([1, 3], device)).sum()
    }

    /// The loss's gradients, in the process's autodiff turn (other tests train beside these).
    fn gradients(m: &Tiny<AB>, device: &burn::tensor::Device<AB>) -> GradientsParams {
        let _graph_turn = bertlab_models::autodiff_lock::lock();
        GradientsParams::from_grads(loss(m, device).backward(), m)
    }

    fn flat<const D: usize>(t: Tensor<impl Backend, D>) -> Vec<f64> {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
    }

    /// Reference Adam in f64 on one scalar parameter for `steps` steps with constant gradient sequence.
    fn reference(p: f64, grads: &[f64], lr: f64, s: &AdamSettings, decay: bool) -> f64 {
        let (mut p, mut m, mut v) = (p, 0.0, 0.0);
        for (i, &g) in grads.iter().enumerate() {
            let t = (i + 1) as i32;
            m = s.beta1 * m + (1.0 - s.beta1) * g;
            v = s.beta2 * v + (1.0 - s.beta2) * g * g;
            if decay {
                p *= 1.0 - lr * s.weight_decay;
            }
            p -= match s.epsilon_form {
                EpsilonForm::BiasCorrected => {
                    lr * (m / (1.0 - s.beta1.powi(t))) / ((v / (1.0 - s.beta2.powi(t))).sqrt() + s.epsilon)
                }
                EpsilonForm::Hat => {
                    lr * (1.0 - s.beta2.powi(t)).sqrt() / (1.0 - s.beta1.powi(t)) * m / (v.sqrt() + s.epsilon)
                }
            };
        }
        p
    }

    #[test]
    fn decay_groups_exempt_bias_and_layer_norm() {
        let device = Default::default();
        let m = tiny(&device);
        let g = DecayGroups::of::<AB, _>(&m);
        let names = |v: &Vec<(ParamId, String)>| v.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&g.decay), vec!["dense.weight"]);
        assert_eq!(names(&g.no_decay), vec!["dense.bias", "norm.gamma", "norm.beta"]);
    }

    #[test]
    fn two_steps_match_reference_formulas() {
        let device = Default::default();
        let lr = 0.01;
        for (settings, scale) in [
            (AdamSettings::hf_adamw(0.1), 1.0),
            (AdamSettings::keras_adam(), 1.0),
            (AdamSettings::hf_adamw(0.1), 0.5),
        ] {
            let model = tiny(&device);
            let w0 = flat(model.dense.weight.val());
            let b0 = flat(model.dense.bias.as_ref().unwrap().val());
            let mut opt = Adam::<AB>::new(settings, &model);
            let exempt = if settings.decay_policy == DecayPolicy::SkipBiasAndNorm { 3 } else { 0 };
            assert_eq!(opt.no_decay_count(), exempt);
            let mut model = model;
            let mut w_grads: Vec<Vec<f64>> = Vec::new();
            let mut b_grads: Vec<Vec<f64>> = Vec::new();
            for _ in 0..2 {
                let grads = gradients(&model, &device);
                w_grads.push(
                    flat(grads.get::<Flex, 2>(model.dense.weight.id).unwrap())
                        .iter()
                        .map(|g| g * scale)
                        .collect(),
                );
                b_grads.push(
                    flat(grads.get::<Flex, 1>(model.dense.bias.as_ref().unwrap().id).unwrap())
                        .iter()
                        .map(|g| g * scale)
                        .collect(),
                );
                model = opt.step(lr, model, grads, scale);
            }
            assert_eq!(opt.steps(), 2);
            let w = flat(model.dense.weight.val());
            let b = flat(model.dense.bias.as_ref().unwrap().val());
            let decays = settings.weight_decay != 0.0;
            for i in 0..w.len() {
                let want = reference(w0[i], &[w_grads[0][i], w_grads[1][i]], lr, &settings, decays);
                assert!((w[i] - want).abs() < 1e-6, "{settings:?} weight[{i}]: {} vs {want}", w[i]);
            }
            for i in 0..b.len() {
                // Biases are never decayed under HF's policy.
                let want = reference(b0[i], &[b_grads[0][i], b_grads[1][i]], lr, &settings, false);
                assert!((b[i] - want).abs() < 1e-6, "{settings:?} bias[{i}]: {} vs {want}", b[i]);
            }
            assert!(model.dense.weight.val().is_require_grad());
        }
    }

    #[test]
    fn norm_and_clip() {
        let device = Default::default();
        let model = tiny(&device);
        let grads = gradients(&model, &device);
        let mut want = 0.0;
        for g in [
            flat(grads.get::<Flex, 2>(model.dense.weight.id).unwrap()),
            flat(grads.get::<Flex, 1>(model.dense.bias.as_ref().unwrap().id).unwrap()),
        ] {
            want += g.iter().map(|x| x * x).sum::<f64>();
        }
        want += flat(grads.get::<Flex, 1>(model.norm.gamma.id).unwrap()).iter().map(|x| x * x).sum::<f64>();
        if let Some(beta) = &model.norm.beta {
            want += flat(grads.get::<Flex, 1>(beta.id).unwrap()).iter().map(|x| x * x).sum::<f64>();
        }
        let got = grad_sq_norm::<AB, _>(&model, &grads).unwrap().into_scalar() as f64;
        assert!((got - want).abs() < 1e-4 * want, "{got} vs {want}");
        assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
        assert!((clip_coefficient(4.0, 1.0) - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
    }

    #[derive(Module, Debug)]
    struct Many<B: Backend> {
        mats: Vec<Param<Tensor<B, 2>>>,
        vecs: Vec<Param<Tensor<B, 1>>>,
        cube: Param<Tensor<B, 3>>,
    }

    /// Gradients of several shapes and ranks, some shapes shared by several tensors (the groups
    /// grad_sq_norm adds element-wise): the sum of squares of every element, in f64 to 1e-6; a
    /// NaN or an infinity anywhere makes it NaN or infinite.
    #[test]
    fn grad_sq_norm_groups_by_shape_and_keeps_non_finite() {
        let device = Default::default();
        let mut seed = 1u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
        };
        let mut values = |n: usize| (0..n).map(|_| next()).collect::<Vec<f32>>();
        let mat_shapes = [[3, 4], [4, 3], [3, 4], [5, 2], [3, 4]];
        let vec_lens = [4, 7, 4, 4, 1];
        let model = Many::<AB> {
            mats: mat_shapes.iter().map(|s| Param::from_tensor(Tensor::zeros(*s, &device))).collect(),
            vecs: vec_lens.iter().map(|n| Param::from_tensor(Tensor::zeros([*n], &device))).collect(),
            cube: Param::from_tensor(Tensor::zeros([2, 3, 2], &device)),
        };
        let mut build = |poison: Option<f32>| {
            let mut grads = GradientsParams::new();
            let mut want = 0.0f64;
            let mut all = Vec::new();
            for (p, s) in model.mats.iter().zip(mat_shapes) {
                let v = values(s[0] * s[1]);
                all.extend(v.iter().copied());
                grads.register::<Flex, 2>(p.id, Tensor::from_data(TensorData::new(v, s), &device));
            }
            for (i, (p, n)) in model.vecs.iter().zip(vec_lens).enumerate() {
                let mut v = values(n);
                if i == 2 {
                    if let Some(x) = poison {
                        v[1] = x;
                    }
                }
                all.extend(v.iter().copied());
                grads.register::<Flex, 1>(p.id, Tensor::from_data(TensorData::new(v, [n]), &device));
            }
            let v = values(12);
            all.extend(v.iter().copied());
            grads.register::<Flex, 3>(
                model.cube.id,
                Tensor::from_data(TensorData::new(v, [2, 3, 2]), &device),
            );
            for x in all {
                want += f64::from(x) * f64::from(x);
            }
            (grads, want)
        };
        let (grads, want) = build(None);
        let got = grad_sq_norm::<AB, _>(&model, &grads).unwrap().into_scalar() as f64;
        assert!((got - want).abs() < 1e-6 * want, "{got} vs {want}");
        let (grads, _) = build(Some(f32::NAN));
        assert!(grad_sq_norm::<AB, _>(&model, &grads).unwrap().into_scalar().is_nan());
        let (grads, _) = build(Some(f32::NEG_INFINITY));
        assert_eq!(grad_sq_norm::<AB, _>(&model, &grads).unwrap().into_scalar(), f32::INFINITY);
        assert!(grad_sq_norm::<AB, _>(&model, &GradientsParams::new()).is_none());
    }

    #[test]
    fn kinds_parse_and_settings() {
        assert_eq!("AdamW".parse::<OptimizerKind>(), Ok(OptimizerKind::Adamw));
        assert_eq!(OptimizerKind::Adam.to_string(), "adam");
        let a = AdamSettings::for_kind(OptimizerKind::Adam, None);
        assert_eq!((a.epsilon, a.weight_decay, a.epsilon_form), (1e-7, 0.0, EpsilonForm::Hat));
        let w = AdamSettings::for_kind(OptimizerKind::Adamw, None);
        assert_eq!((w.epsilon, w.weight_decay, w.decay_policy), (1e-8, 0.01, DecayPolicy::SkipBiasAndNorm));
        assert_eq!(AdamSettings::for_kind(OptimizerKind::Adamw, Some(0.0)).weight_decay, 0.0);
    }
}
