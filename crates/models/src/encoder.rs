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
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, FloatDType, Int, Tensor};

use crate::ops::{self, DropoutMask, Kernels, LinearActivation};
use crate::precision::Precision;
use bertlab_model_config::{Activation, Architecture, ModelConfig};

/// How self-attention is computed on the reference path ([`Kernels::Reference`], f16/bf16, or a
/// backend without a fused fast path; [`Kernels::Fused`] on Flex in f32 uses
/// [`ops::attention`] whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionKernel {
    /// [`AttentionKernel::Fused`] for inference, [`AttentionKernel::Explicit`] under autodiff
    /// (training needs attention-probability dropout, which fused kernels do not offer, and
    /// Burn's autodiff unfuses attention anyway).
    #[default]
    Auto,
    /// The backend's attention op (`burn::tensor::module::attention`), with a boolean padding
    /// mask. Flex computes it in f32 whatever the input dtype; CubeCL's flash kernel
    /// accumulates in f32.
    Fused,
    /// `softmax(QKᵀ/√d + mask)·V` spelled out: scores and softmax in f32, padded keys at
    /// `f32::MIN` as in `transformers`' eager attention, dropout on the probabilities when
    /// training.
    Explicit,
}

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

fn activate<B: Backend, const D: usize>(act: Activation, x: Tensor<B, D>) -> Tensor<B, D> {
    match act {
        Activation::Gelu => activation::gelu(x),
        Activation::GeluTanh => activation::gelu_approximate(x),
        Activation::Relu => activation::relu(x),
        Activation::Silu => activation::silu(x),
    }
}

/// A Q/K/V projection straight into heads: `[batch, seq, hidden]` → `[batch, heads, seq,
/// head_dim]`, contiguous.
///
/// The weight `[hidden, heads·head_dim]` is viewed (no copy) as `[1, heads, hidden, head_dim]`
/// and broadcast against `[batch, 1, seq, hidden]`: one batched GEMM per (row, head) that
/// writes the head-major layout attention wants, so no permutation copy follows. The bias is
/// added on a 2-D view (`[batch, heads·seq·head_dim]` + one row), Flex's fast broadcast.
fn project_heads<B: Backend>(
    layer: &Linear<B>,
    x: Tensor<B, 3>,
    heads: usize,
    dtype: FloatDType,
) -> Tensor<B, 4> {
    let [batch, seq, d_in] = x.dims();
    let head_dim = layer.weight.lazy_shape().dims::<2>()[1] / heads;
    let weight =
        layer.weight.val().cast(dtype).reshape([d_in, heads, head_dim]).swap_dims(0, 1).unsqueeze::<4>();
    let y = x.cast(dtype).reshape([batch, 1, seq, d_in]).matmul(weight); // [batch, heads, seq, head_dim]
    match &layer.bias {
        None => y,
        Some(bias) => {
            let width = heads * seq * head_dim;
            let row =
                bias.val().cast(dtype).reshape([heads, 1, head_dim]).repeat_dim(1, seq).reshape([1, width]);
            (y.reshape([batch, width]) + row).reshape([batch, heads, seq, head_dim])
        }
    }
}

/// The padding mask `[batch, heads, seq, seq]`, true on padded keys, built once per forward
/// and materialised (`repeat_dim` writes a contiguous tensor): a lazily expanded mask would be
/// copied element by element inside every layer's attention on Flex (≈37 ms per layer at
/// 32 × 12 × 128 × 128, measured).
fn padding_mask<B: Backend>(attention_mask: Tensor<B, 2, Int>, heads: usize) -> Tensor<B, 4, Bool> {
    let [batch, seq] = attention_mask.dims();
    attention_mask.equal_elem(0).reshape([batch, 1, 1, seq]).repeat_dim(2, seq).repeat_dim(1, heads)
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

    /// `input_ids [batch, seq]` → `[batch, seq, hidden]` f32; `fused`: LayerNorm and dropout
    /// through [`ops`].
    fn forward(&self, input_ids: Tensor<B, 2, Int>, fused: bool) -> Tensor<B, 3> {
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
        if !fused {
            return self.dropout.forward(self.layer_norm.forward(x));
        }
        let [batch, seq, hidden] = x.dims();
        let device = x.device();
        let (gamma, beta) = norm_params(&self.layer_norm);
        let x = ops::residual_layer_norm(
            x.reshape([batch * seq, hidden]),
            None,
            gamma,
            beta,
            self.layer_norm_eps,
            None,
        );
        ops::dropout(x, DropoutMask::draw::<B>(self.dropout.prob, &device)).reshape([batch, seq, hidden])
    }
}

/// One post-LayerNorm transformer layer.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Query projection.
    pub query: Linear<B>,
    /// Key projection.
    pub key: Linear<B>,
    /// Value projection.
    pub value: Linear<B>,
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
            query: dense(h, h),
            key: dense(h, h),
            value: dense(h, h),
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

    /// The layer on the [`ops`] seam (f32): Q, K and V in one product with the concatenated
    /// weights, attention straight from that `[batch, seq, 3·hidden]` projection, bias + GELU
    /// in the intermediate product, dropout + residual + LayerNorm in one op. `padding
    /// [batch, seq]` is true on padded tokens.
    fn forward_fused(&self, x: Tensor<B, 3>, padding: &Tensor<B, 2, Bool>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let device = x.device();
        let rows = batch * seq;
        let flat = x.reshape([rows, hidden]);

        let [(wq, bq), (wk, bk), (wv, bv)] = [&self.query, &self.key, &self.value].map(linear_params);
        let qkv_weight = Tensor::cat(vec![wq, wk, wv], 1); // [hidden, 3·hidden]
        let qkv_bias = Tensor::cat(vec![bq, bk, bv], 0);
        let qkv = ops::linear(flat.clone(), qkv_weight, qkv_bias, LinearActivation::Identity);
        let context = ops::attention(
            qkv.reshape([batch, seq, 3 * hidden]),
            padding.clone(),
            self.heads,
            DropoutMask::draw::<B>(self.attention_probs_dropout.prob, &device),
        );
        let (w, b) = linear_params(&self.attention_output);
        let attended = ops::linear(context.reshape([rows, hidden]), w, b, LinearActivation::Identity);
        let (gamma, beta) = norm_params(&self.attention_norm);
        let x = ops::residual_layer_norm(
            flat,
            Some(attended),
            gamma,
            beta,
            self.layer_norm_eps,
            DropoutMask::draw::<B>(self.attention_output_dropout.prob, &device),
        );

        let (w, b) = linear_params(&self.intermediate);
        let inner = match self.activation {
            Activation::Gelu => ops::linear(x.clone(), w, b, LinearActivation::Gelu),
            other => activate(other, ops::linear(x.clone(), w, b, LinearActivation::Identity)),
        }; // [rows, intermediate]
        let (w, b) = linear_params(&self.output);
        let out = ops::linear(inner, w, b, LinearActivation::Identity);
        let (gamma, beta) = norm_params(&self.output_norm);
        let y = ops::residual_layer_norm(
            x,
            Some(out),
            gamma,
            beta,
            self.layer_norm_eps,
            DropoutMask::draw::<B>(self.output_dropout.prob, &device),
        );
        y.reshape([batch, seq, hidden])
    }

    /// `[batch, seq, hidden]` f32 → `[batch, seq, hidden]` f32; `mask` `[batch, heads, seq, seq]`
    /// is true on padded keys.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: &Tensor<B, 4, Bool>,
        dtype: FloatDType,
        fused: bool,
    ) -> Tensor<B, 3> {
        let xc = x.clone().cast(dtype); // cast once for the three projections
        let context = if fused {
            self.fused_attention(xc, mask, dtype)
        } else {
            let q = linear(&self.query, xc.clone(), dtype);
            let k = linear(&self.key, xc.clone(), dtype);
            let v = linear(&self.value, xc, dtype);
            self.explicit_attention(q, k, v, mask, dtype)
        }; // [batch, seq, hidden]

        let attended = linear(&self.attention_output, context, dtype).cast(FloatDType::F32);
        let x = self.attention_norm.forward(self.attention_output_dropout.forward(attended) + x);

        let inner = activate(self.activation, linear(&self.intermediate, x.clone(), dtype)); // [batch, seq, intermediate]
        let out = linear(&self.output, inner, dtype).cast(FloatDType::F32);
        self.output_norm.forward(self.output_dropout.forward(out) + x)
    }

    /// The backend's attention op on `[batch, heads, seq, head_dim]` projections.
    ///
    /// Q, K and V are projected straight into heads (see [`project_heads`]) and the heads are
    /// merged by concatenating per-head slices: on Flex, a `swap_dims` + `reshape` permutation
    /// of these 4-D layouts falls back to an element-wise strided copy (≈12 ms each at
    /// 32 × 128 × 384, measured), a `cat` of slices copies whole rows (≈3 ms). Only used
    /// without autodiff, where the slices cost no backward pass.
    fn fused_attention(&self, x: Tensor<B, 3>, mask: &Tensor<B, 4, Bool>, dtype: FloatDType) -> Tensor<B, 3> {
        let q = project_heads(&self.query, x.clone(), self.heads, dtype);
        let k = project_heads(&self.key, x.clone(), self.heads, dtype);
        let v = project_heads(&self.value, x, self.heads, dtype);
        let context = attention(q, k, v, Some(mask.clone()), None, AttentionModuleOptions::default());
        let [batch, _, seq, head_dim] = context.dims();
        // [batch, heads, seq, head_dim] → [batch, seq, hidden]
        let heads = (0..self.heads)
            .map(|h| context.clone().narrow(1, h, 1).reshape([batch, seq, head_dim]))
            .collect();
        Tensor::cat(heads, 2)
    }

    /// `softmax(QKᵀ/√d + mask)·V` with scores and softmax in f32 and dropout on the
    /// probabilities (training). Masked scores are set to `f32::MIN`, which after the softmax
    /// is the same as `transformers`' eager attention adding `finfo(f32).min`.
    fn explicit_attention(
        &self,
        q: Tensor<B, 3>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
        mask: &Tensor<B, 4, Bool>,
        dtype: FloatDType,
    ) -> Tensor<B, 3> {
        let [batch, seq, hidden] = q.dims();
        let head_dim = hidden / self.heads;
        // [batch, seq, hidden] → [batch, heads, seq, head_dim]
        let split = |t: Tensor<B, 3>| t.reshape([batch, seq, self.heads, head_dim]).swap_dims(1, 2);
        let scale = (head_dim as f64).powf(-0.5);
        let scores = split(q).matmul(split(k).swap_dims(2, 3)).cast(FloatDType::F32) * scale; // [batch, heads, seq, seq]
        let probs = activation::softmax(scores.mask_fill(mask.clone(), f32::MIN), 3);
        let probs = self.attention_probs_dropout.forward(probs);
        let context = probs.cast(dtype).matmul(split(v)); // [batch, heads, seq, head_dim]
        context.swap_dims(1, 2).reshape([batch, seq, hidden])
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
    heads: usize,
    kernel: AttentionKernel,
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
            heads: config.num_attention_heads,
            kernel: AttentionKernel::Auto,
            kernels: Kernels::Fused,
        }
    }

    pub(crate) fn set_kernel(&mut self, kernel: AttentionKernel) {
        self.kernel = kernel;
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
        let use_ops = self.kernels == Kernels::Fused && dtype == FloatDType::F32 && ops::has_fast_path::<B>();
        if use_ops {
            let padding = attention_mask.equal_elem(0);
            let mut x = self.embeddings.forward(input_ids, true);
            for layer in &self.layers {
                x = layer.forward_fused(x, &padding);
            }
            return x;
        }
        let fused = match self.kernel {
            AttentionKernel::Auto => !B::ad_enabled(&input_ids.device()),
            AttentionKernel::Fused => true,
            AttentionKernel::Explicit => false,
        };
        let mask = padding_mask(attention_mask, self.heads);
        let mut x = self.embeddings.forward(input_ids, false);
        for layer in &self.layers {
            x = layer.forward(x, &mask, dtype, fused);
        }
        x
    }

    /// BERT's pooler output `[batch, hidden]` (tanh of a dense layer on [CLS]), in f32.
    pub(crate) fn pool(&self, hidden: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let pooler = self.pooler.as_ref()?;
        Some(linear(pooler, cls(hidden), FloatDType::F32).tanh())
    }
}

/// The hidden state of the first ([CLS]) token: `[batch, seq, hidden]` → `[batch, hidden]`.
pub fn cls<B: Backend>(hidden: Tensor<B, 3>) -> Tensor<B, 2> {
    let [batch, _, h] = hidden.dims();
    hidden.narrow(1, 0, 1).reshape([batch, h])
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
