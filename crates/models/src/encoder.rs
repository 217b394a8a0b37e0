//! The transformer encoder shared by BERT and DistilBERT.
//!
//! Both are post-LayerNorm encoders with the same layer:
//!
//! ```text
//! x ─► Q,K,V ─► softmax(QKᵀ/√d + mask)·V ─► out-proj ─► dropout ─► LayerNorm(x + ·) = a
//! a ─► dense ─► activation ─► dense ─► dropout ─► LayerNorm(a + ·)
//! ```
//!
//! They differ in the embeddings (BERT adds token-type embeddings), in the pooler (BERT only),
//! in DistilBERT applying no dropout after the attention projection, and in the names of the
//! checkpoint tensors — which live in `bert.rs` and `distilbert.rs`.

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, FloatDType, Int, Tensor};

use crate::ops::{self, reference, DropoutMask, Kernels, LinearActivation};
use crate::precision::Precision;
use bertlab_model_config::{Activation, Architecture, ModelConfig};

/// Cast a linear layer's parameters and input to `dtype` and apply it.
///
/// Casting to the dtype a tensor already has is free, so f32 inference pays nothing. The
/// product runs on the 2-D view `[rows, d_in]`: Flex adds a bias to a 2-D tensor an order of
/// magnitude faster than to a 3-D one (26 ms → 2.6 ms at 32 × 128 × 384, measured), and a
/// single large GEMM is its fastest matmul shape.
pub(crate) fn linear<B: Backend, const D: usize>(
    layer: &Linear<B>,
    input: Tensor<B, D>,
    dtype: FloatDType,
) -> Tensor<B, D> {
    let weight = layer.weight.val().cast(dtype);
    let bias = layer.bias.as_ref().map(|b| b.val().cast(dtype));
    let dims = input.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out_dims = dims;
    out_dims[D - 1] = weight.dims()[1];
    let flat = input.cast(dtype).reshape([rows, d_in]);
    burn::tensor::module::linear(flat, weight, bias).reshape(out_dims)
}

/// `gelu_new` / `gelu_pytorch_tanh`: `x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))/2`, in f32 and
/// rounded once to `x`'s dtype, as exact GELU ([`ops::reference::gelu`]). The cube is two
/// products: Burn's `gelu_approximate` raises `x` to the power 3.0, which WGSL and SPIR-V leave
/// undefined for `x < 0` (Mesa 26's lavapipe gives NaN in f16 for every `x`).
pub(crate) fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = FloatDType::from(x.dtype());
    let x = x.cast(FloatDType::F32);
    let cube = x.clone() * x.clone() * x.clone();
    let inner =
        (x.clone() + cube * 0.044715) * (std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    (x * (inner.tanh() + 1.0) * 0.5).cast(dtype)
}

fn activate<B: Backend, const D: usize>(act: Activation, x: Tensor<B, D>) -> Tensor<B, D> {
    match act {
        Activation::Gelu => ops::gelu(x),
        Activation::GeluTanh => gelu_tanh(x),
        Activation::Relu => activation::relu(x),
        Activation::Silu => activation::silu(x),
    }
}

/// The ops of one forward pass: the seam's (routed to a backend's fast path where it has one)
/// or its reference decomposition everywhere ([`Kernels::Reference`]).
#[derive(Debug, Clone, Copy)]
struct Seam(Kernels);

impl Seam {
    fn linear<B: Backend>(
        self,
        x: Tensor<B, 2>,
        w: Tensor<B, 2>,
        b: Tensor<B, 1>,
        act: LinearActivation,
    ) -> Tensor<B, 2> {
        match self.0 {
            Kernels::Fused => ops::linear(x, w, b, act),
            Kernels::Reference => reference::linear(x, w, b, act),
        }
    }

    fn attention<B: Backend>(
        self,
        qkv: Tensor<B, 3>,
        padding: Tensor<B, 2, Bool>,
        heads: usize,
        dropout: Option<DropoutMask>,
    ) -> Tensor<B, 3> {
        match self.0 {
            Kernels::Fused => ops::attention(qkv, padding, heads, dropout),
            Kernels::Reference => reference::attention(qkv, padding, heads, dropout),
        }
    }

    /// With `copy`, the output in that dtype too, for the product that reads it next
    /// ([`ops::residual_layer_norm_with_copy`]: on the fast path the LayerNorm's kernel writes
    /// it, saving a cast's launch).
    #[allow(clippy::too_many_arguments)]
    fn residual_layer_norm<B: Backend>(
        self,
        residual: Tensor<B, 2>,
        branch: Option<Tensor<B, 2>>,
        norm: &LayerNorm<B>,
        epsilon: f64,
        dropout: Option<DropoutMask>,
        copy: Option<FloatDType>,
    ) -> Hidden<B> {
        let (gamma, beta) = norm_params(norm);
        match (self.0, copy) {
            (Kernels::Fused, Some(dtype)) => {
                let (rows, copy) = ops::residual_layer_norm_with_copy(
                    residual, branch, gamma, beta, epsilon, dropout, dtype,
                );
                Hidden { rows, copy: Some(copy) }
            }
            (Kernels::Fused, None) => Hidden {
                rows: ops::residual_layer_norm(residual, branch, gamma, beta, epsilon, dropout),
                copy: None,
            },
            (Kernels::Reference, _) => Hidden {
                rows: reference::residual_layer_norm(residual, branch, gamma, beta, epsilon, dropout),
                copy: None,
            },
        }
    }

    /// A master parameter in a product's dtype; on the fast path its gradient comes back in
    /// that dtype ([`ops::param_cast`]).
    fn param<B: Backend, const D: usize>(self, param: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
        match self.0 {
            Kernels::Fused => ops::param_cast(param, dtype),
            Kernels::Reference => param.cast(dtype),
        }
    }

    fn dropout<B: Backend, const D: usize>(self, x: Tensor<B, D>, mask: Option<DropoutMask>) -> Tensor<B, D> {
        match (self.0, mask) {
            (_, None) => x,
            (Kernels::Fused, mask) => ops::dropout(x, mask),
            (Kernels::Reference, Some(mask)) => reference::dropout(x, mask),
        }
    }
}

/// A hidden state as the layers pass it on: `[rows, hidden]` f32 (the residual stream) and,
/// where the LayerNorm that made it wrote one, its copy in the products' dtype.
struct Hidden<B: Backend> {
    rows: Tensor<B, 2>,
    copy: Option<Tensor<B, 2>>,
}

impl<B: Backend> Hidden<B> {
    /// The rows in `dtype`, for a product: the copy where there is one in it, else a cast.
    fn in_dtype(&self, dtype: FloatDType) -> Tensor<B, 2> {
        match &self.copy {
            Some(copy) if copy.dtype() == dtype.into() => copy.clone(),
            _ => self.rows.clone().cast(dtype),
        }
    }
}

/// Token embeddings: word + position (+ token type 0 for BERT), LayerNorm, dropout.
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    /// `[vocab, hidden]`.
    pub word_embeddings: Embedding<B>,
    /// `[max_positions, hidden]`.
    pub position_embeddings: Embedding<B>,
    /// `[type_vocab, hidden]` (BERT); DistilBERT has none.
    pub token_type_embeddings: Option<Embedding<B>>,
    /// Normalises the summed embeddings.
    pub layer_norm: LayerNorm<B>,
    dropout: Dropout,
    layer_norm_eps: f64,
}

impl<B: Backend> Embeddings<B> {
    fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        Embeddings {
            word_embeddings: EmbeddingConfig::new(config.vocab_size, h).init(device),
            position_embeddings: EmbeddingConfig::new(config.max_position_embeddings, h).init(device),
            token_type_embeddings: (config.type_vocab_size > 0)
                .then(|| EmbeddingConfig::new(config.type_vocab_size, h).init(device)),
            layer_norm: LayerNormConfig::new(h).with_epsilon(config.layer_norm_eps).init(device),
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            layer_norm_eps: config.layer_norm_eps,
        }
    }

    /// `input_ids [batch, seq]` → `[batch, seq, hidden]` f32, LayerNorm and dropout through
    /// the seam.
    fn forward(&self, input_ids: Tensor<B, 2, Int>, seam: Seam) -> Tensor<B, 3> {
        let [_, seq] = input_ids.dims();
        let max_positions = self.position_embeddings.weight.lazy_shape().dims::<2>()[0];
        assert!(
            seq <= max_positions,
            "sequence of {seq} tokens is longer than the model's {max_positions} positions \
             (max_position_embeddings); truncate to at most {max_positions}"
        );
        // [batch, seq, hidden]
        let mut x = self.word_embeddings.forward(input_ids);
        // bertlab encodes single sentences: every token has type 0, as transformers assumes
        // when token_type_ids is not passed.
        if let Some(types) = &self.token_type_embeddings {
            x = x + types.weight.val().narrow(0, 0, 1).unsqueeze::<3>(); // + [1, 1, hidden]
        }
        // Positions 0..seq, the same for every row (padding does not shift them).
        x = x + self.position_embeddings.weight.val().narrow(0, 0, seq).unsqueeze::<3>(); // + [1, seq, hidden]
        let [batch, seq, hidden] = x.dims();
        let device = x.device();
        let x = seam.residual_layer_norm(
            x.reshape([batch * seq, hidden]),
            None,
            &self.layer_norm,
            self.layer_norm_eps,
            None,
            None,
        );
        seam.dropout(x.rows, DropoutMask::draw::<B>(self.dropout.prob, &device)).reshape([batch, seq, hidden])
    }
}

/// One post-LayerNorm transformer layer.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// The query, key and value projections as one `[hidden, 3·hidden]` layer: columns
    /// `[0, hidden)` are the query's, then the key's, then the value's (`transformers`' three
    /// linears side by side; loading and export split them by name). One parameter, so a
    /// step multiplies by it as it is instead of concatenating three.
    pub qkv: Linear<B>,
    /// Projection of the attended values back to the hidden size.
    pub attention_output: Linear<B>,
    /// LayerNorm after the attention residual.
    pub attention_norm: LayerNorm<B>,
    /// First feed-forward dense (hidden → intermediate).
    pub intermediate: Linear<B>,
    /// Second feed-forward dense (intermediate → hidden).
    pub output: Linear<B>,
    /// LayerNorm after the feed-forward residual.
    pub output_norm: LayerNorm<B>,
    attention_probs_dropout: Dropout,
    attention_output_dropout: Dropout,
    output_dropout: Dropout,
    heads: usize,
    activation: Activation,
    layer_norm_eps: f64,
}

/// γ and β of a LayerNorm (β = 0 when it has none).
fn norm_params<B: Backend>(norm: &LayerNorm<B>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let gamma = norm.gamma.val();
    let beta = match &norm.beta {
        Some(beta) => beta.val(),
        None => gamma.zeros_like(),
    };
    (gamma, beta)
}

/// Weight and bias of a linear layer (a zero bias when it has none).
fn linear_params<B: Backend>(layer: &Linear<B>) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let weight = layer.weight.val();
    let bias = match &layer.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([weight.dims()[1]], &weight.device()),
    };
    (weight, bias)
}

impl<B: Backend> EncoderLayer<B> {
    fn new(config: &ModelConfig, device: &B::Device) -> Self {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let dense = |d_in, d_out| LinearConfig::new(d_in, d_out).init(device);
        let norm = || LayerNormConfig::new(h).with_epsilon(config.layer_norm_eps).init(device);
        // DistilBERT applies no dropout between the attention projection and its residual.
        let attention_output_dropout = match config.architecture {
            Architecture::Bert => config.hidden_dropout_prob,
            Architecture::DistilBert => 0.0,
        };
        EncoderLayer {
            // Fan-in `h` as for three `h → h` layers: the same initial distribution.
            qkv: dense(h, 3 * h),
            attention_output: dense(h, h),
            attention_norm: norm(),
            intermediate: dense(h, i),
            output: dense(i, h),
            output_norm: norm(),
            attention_probs_dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
            attention_output_dropout: DropoutConfig::new(attention_output_dropout).init(),
            output_dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            heads: config.num_attention_heads,
            activation: config.hidden_act,
            layer_norm_eps: config.layer_norm_eps,
        }
    }

    /// `[batch·seq, hidden]` f32 rows → the same, every op through the seam: Q, K and V in one
    /// product, attention straight from that `[batch, seq, 3·hidden]` projection, bias + GELU
    /// in the intermediate product, dropout + residual + LayerNorm in one op. `padding
    /// [batch, seq]` is true on padded tokens. With `copy_out`, the output comes with its copy
    /// in `dtype` (the next layer's first product reads it).
    ///
    /// Mixed precision as autocast splits it: the products' inputs (activations and weights,
    /// cast from the f32 masters) are in `dtype`, the attention scores and softmax in f32
    /// (inside [`ops::attention`]), the residual stream, LayerNorm and dropout on it in f32.
    fn forward(
        &self,
        x: Hidden<B>,
        padding: &Tensor<B, 2, Bool>,
        dtype: FloatDType,
        seam: Seam,
        copy_out: bool,
    ) -> Hidden<B> {
        let [batch, seq] = padding.dims();
        let [rows, hidden] = x.rows.dims();
        let device = x.rows.device();
        // The products' inputs in `dtype`, made by the LayerNorm before them (no copy in f32).
        let copy = (dtype != FloatDType::F32).then_some(dtype);
        let params = |layer: &Linear<B>| {
            let (w, b) = linear_params(layer);
            (seam.param(w, dtype), seam.param(b, dtype))
        };

        let (w, b) = params(&self.qkv); // [hidden, 3·hidden], [3·hidden]
        let qkv = seam.linear(x.in_dtype(dtype), w, b, LinearActivation::Identity);
        let context = seam.attention(
            qkv.reshape([batch, seq, 3 * hidden]),
            padding.clone(),
            self.heads,
            DropoutMask::draw::<B>(self.attention_probs_dropout.prob, &device),
        );
        let (w, b) = params(&self.attention_output);
        // In the product's dtype: the LayerNorm widens it (its kernel as it reads it, and
        // hands the gradient back in that dtype).
        let attended = seam.linear(context.reshape([rows, hidden]), w, b, LinearActivation::Identity);
        let x = seam.residual_layer_norm(
            x.rows,
            Some(attended),
            &self.attention_norm,
            self.layer_norm_eps,
            DropoutMask::draw::<B>(self.attention_output_dropout.prob, &device),
            copy,
        );

        let (w, b) = params(&self.intermediate);
        let inner = match self.activation {
            Activation::Gelu => seam.linear(x.in_dtype(dtype), w, b, LinearActivation::Gelu),
            other => activate(other, seam.linear(x.in_dtype(dtype), w, b, LinearActivation::Identity)),
        }; // [rows, intermediate]
        let (w, b) = params(&self.output);
        let out = seam.linear(inner, w, b, LinearActivation::Identity);
        seam.residual_layer_norm(
            x.rows,
            Some(out),
            &self.output_norm,
            self.layer_norm_eps,
            DropoutMask::draw::<B>(self.output_dropout.prob, &device),
            copy.filter(|_| copy_out),
        )
    }
}

/// Embeddings, the layer stack and (BERT) the pooler.
#[derive(Module, Debug)]
pub struct Backbone<B: Backend> {
    /// Token embeddings.
    pub embeddings: Embeddings<B>,
    /// The encoder layers, bottom first.
    pub layers: Vec<EncoderLayer<B>>,
    /// BERT's pooler: dense + tanh on the [CLS] hidden state. `None` for DistilBERT, and for
    /// a BERT encoder whose file has no pooler weights.
    pub pooler: Option<Linear<B>>,
    kernels: Kernels,
}

impl<B: Backend> Backbone<B> {
    /// Parameters shaped by `config`, lazily initialised (loading replaces them).
    pub(crate) fn new(config: &ModelConfig, with_pooler: bool, device: &B::Device) -> Self {
        Backbone {
            embeddings: Embeddings::new(config, device),
            layers: (0..config.num_hidden_layers).map(|_| EncoderLayer::new(config, device)).collect(),
            pooler: with_pooler
                .then(|| LinearConfig::new(config.hidden_size, config.hidden_size).init(device)),
            kernels: Kernels::Fused,
        }
    }

    pub(crate) fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// `input_ids`, `attention_mask` `[batch, seq]` → last hidden state `[batch, seq, hidden]` f32.
    pub(crate) fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        precision: Precision,
    ) -> Tensor<B, 3> {
        assert_eq!(
            input_ids.dims(),
            attention_mask.dims(),
            "input_ids and attention_mask must have the same [batch, seq] shape"
        );
        let dtype = crate::precision::float_dtype(precision);
        let seam = Seam(self.kernels);
        let padding = attention_mask.equal_elem(0);
        let embedded = self.embeddings.forward(input_ids, seam);
        let [batch, seq, hidden] = embedded.dims();
        // The embeddings' output is dropped out after its LayerNorm: the first layer casts it.
        let mut x = Hidden { rows: embedded.reshape([batch * seq, hidden]), copy: None };
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x, &padding, dtype, seam, i + 1 < self.layers.len());
        }
        x.rows.reshape([batch, seq, hidden])
    }

    /// BERT's pooler output `[batch, hidden]` (tanh of a dense layer on [CLS]), in f32.
    pub(crate) fn pool(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let pooler = self.pooler.as_ref()?;
        Some(linear(pooler, cls(hidden), FloatDType::F32).tanh())
    }
}

/// The hidden state of the first ([CLS]) token: `[batch, seq, hidden]` → `[batch, hidden]`.
pub fn cls<B: Backend>(hidden: Tensor<B, 3>) -> Tensor<B, 2> {
    let [batch, seq, h] = hidden.dims();
    // The first `h` columns of each row's `seq·h`: a 2-D slice, whose backward is the same
    // kernel as the position embeddings' (a 3-D one is another compilation on a GPU).
    hidden.reshape([batch, seq * h]).narrow(1, 0, h)
}

/// Mean of the hidden states over the tokens of each row (padding excluded), as
/// sentence-transformers pools: `[batch, seq, hidden]`, mask `[batch, seq]` → `[batch, hidden]`.
pub fn mean_pool<B: Backend>(hidden: Tensor<B, 3>, attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [batch, _, h] = hidden.dims();
    let weights = attention_mask.float().cast(FloatDType::F32).unsqueeze_dim::<3>(2); // [batch, seq, 1]
    let summed = (hidden * weights.clone()).sum_dim(1).reshape([batch, h]);
    let counts = weights.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
    summed / counts
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{activation, FloatDType, Tensor, TensorData};

    #[test]
    fn gelu_tanh_is_burns_approximation_without_a_power() {
        let xs = vec![-6.0f32, -3.0, -1.5, -0.5, 0.0, 0.25, 1.5, 3.0, 8.0];
        let x = Tensor::<Flex, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &Default::default());
        let ours = super::gelu_tanh(x.clone()).into_data().to_vec::<f32>().unwrap();
        let burns = activation::gelu_approximate(x.clone()).into_data().to_vec::<f32>().unwrap();
        for ((x, a), b) in xs.iter().zip(&ours).zip(&burns) {
            // transformers' NewGELUActivation, in f64.
            let x64 = f64::from(*x);
            let want = 0.5
                * x64
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3))).tanh());
            assert!(
                (f64::from(*a) - want).abs() <= 1e-6 * want.abs().max(1.0),
                "gelu_tanh({x}) = {a}, want {want}"
            );
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "gelu_tanh({x}) = {a}, Burn's {b}");
        }
        // Computed in f32 and rounded once: an f16 input gives the f32 result's nearest f16.
        let half = super::gelu_tanh(x.cast(FloatDType::F16)).cast(FloatDType::F32);
        let half = half.into_data().to_vec::<f32>().unwrap();
        for (h, a) in half.iter().zip(&ours) {
            assert_eq!(*h, half::f16::from_f32(*a).to_f32(), "{half:?}");
        }
    }
}
