"""int8 inference of SIDN on the CPU (oneDNN): the fast mode that needs no bf16 hardware (issue 11).

:func:`make_int8` turns a :class:`~sidn.model.sidn.SIDN` and an :class:`Int8Calibration` into an
:class:`Int8SIDN`: an inference-only copy that returns the model's :class:`SIDNOutput` (float32
tensors) and runs the convolutions as oneDNN int8 primitives (``torch.ops.onednn.qconv2d_pointwise``,
the kernels ``torch.compile`` emits for PT2E-quantised models on x86, called directly, so nothing
is compiled). What is int8 and what is not:

* every FEM/FSEM convolution (BatchNorm folded in): uint8 activations, int8 weights (per output
  channel, symmetric), int32 accumulation, with the ReLU and, in a residual block, the skip
  addition fused into the primitive (oneDNN ``sum`` post-op), re-quantised to uint8 on output;
* the SM deconvolutions (``ConvTranspose2d(k=4, s=2, p=1)``): PyTorch has no int8 transposed
  convolution with per-channel weights, so each one runs as the equivalent 2x2 int8 convolution
  to the four output phases followed by an interleave (:func:`deconv_as_conv`; same MACs);
* kept in float32: the FEM stem (one input channel, 0.3 % of the MACs; its output is written
  as uint8 by the same oneDNN call, :class:`FloatStem`), the GSRM (its softmax over unscaled
  centre similarities turns small errors into a different centre) and, per ``tail``
  (:data:`TAILS`), the end of the SM: ``"block"`` the last
  deconvolution block and the head, ``"head"`` (default) only the head, the last block's int8
  result being read out in float32 without re-quantisation, ``"none"`` nothing (the head is
  an int8 convolution with float32 output). The sigmoids and the fusion of eq. (26) are float32.

Schemes (:func:`int8_scheme`). CPUs with VNNI (AVX512-VNNI, AVX-VNNI) or AMX multiply uint8 by
int8 exactly (``u8s8``). Without VNNI (AVX2, AVX-512 without VNNI) oneDNN multiplies with
``vpmaddubsw``, whose 16-bit pair sums saturate for 8-bit activations times 8-bit weights (seen
under ``ONEDNN_MAX_CPU_ISA=AVX2``: fused map 0.2 off). There the activations are quantised to 7
bits (``u7s8``: 0..127), which cannot saturate, so the integer results are exact on every ISA.
7-bit *weights* would do the same but cost 4x the error (FSEM output 7 % instead of 1.6 % rms
on a trained model), hence 7-bit activations. The scheme is found by running one probe
convolution (:func:`int8_scheme`), which also honours ``ONEDNN_MAX_CPU_ISA``.

Calibration (:func:`calibrate_int8`): activation ranges (min/max) are observed on the float32
model (BN folded) over held-out good images and the DGM validation set
(:func:`sidn.data.dgm.make_validation_set`), never a test split; then the int8 model is judged
against float32 on what users see (:func:`parity_report`): pixel AUROC and image AUROC on the
DGM validation set within :data:`AUROC_TOL` (0.005), and the same number of false alarms on the
good images at the calibrated threshold (the model's, else the one ``sidn calibrate`` would pick
from the float32 maps); the max |diff| of the fused map is reported. Each scheme that computes
exactly on this machine is judged (``u7s8`` always, ``u8s8`` on VNNI/AMX machines).

A caveat found on the small models this was tested on: the GSRM's softmax over *unscaled*
centre similarities (``gsrm_scale = 1``) is nearly one-hot, so where two centres are almost
equally close a small change of the FSEM output picks the other centre and the map jumps
there (a 64 px leather model: 0.25 % of the texture positions switch centre under u8s8, none
under bf16; max |diff| of the fused map 0.18 against 0.03). Pixel AUROC does not notice, but
the image score (the map's maximum) of a few images moves, and image AUROC on a DGM validation
set can then miss the 0.005 (on the same model bf16 itself was 0.0064 off). Hence the
variants (:func:`variants`): if int8 FSEM branches miss parity, the FSEM runs in float (bf16
where native, else fp32: ``+bf16fsem`` / ``+fp32fsem``; the FEM and SM stay int8), and if
that misses too the float fast mode is served. Which one passes depends on the model.

Measured on the 2-core AMD EPYC (Zen 4: AVX512-VNNI/BF16, no AMX) this was written on, under
other people's load (1-min load 4.8-6 on 2 CPUs), batch 1, 256x256, best of 20 interleaved
runs, one thread (two threads were slower than one at that load): fp32 79 ms, bf16 fast mode
40, int8 ``u8s8`` 26 (``u7s8`` 25, float FSEM 32, ``tail="block"`` 29); with
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` (onednn's kernels and ATen's, so an AVX2
machine as far as these ops go): fp32 77, float fast mode 69, int8 ``u7s8`` 41 (fp32 FSEM 56).
Batch 16 is run in chunks of :data:`CHUNK` images (per image 37.6 -> 25.6 ms, cache).

Alternatives tried (issue 11): onnxruntime 1.32 ``quantize_static`` (QDQ, per-channel,
calibration reader) leaves ``ConvTranspose`` in fp32 and did not fold the SM's BatchNorms;
at batch 1, 256 px, 2 threads it ran 101-140 ms against 127 ms for its own fp32 and 49 ms for
the bf16 fast mode here, and its MLAS kernels pick their ISA from CPUID (no way to emulate an
AVX2 machine; U8S8 on AVX2 has the same ``vpmaddubsw`` saturation). PyTorch's eager
``quantized::conv_transpose2d`` refuses per-channel weights (and quantized tensors are
deprecated); PT2E + ``torch.compile`` would emit these same oneDNN kernels after 10-65 s of
compilation per process.

The result, an :class:`Int8Calibration` (primitives only), ties itself to the weights by
:func:`sidn.weights_hash.weights_sha256` and can live in a bundle's ``extra``
(:func:`sidn.bundle.store_int8_calibration`, :func:`from_bundle_extra`). :func:`attach` hangs it on a model; :func:`sidn.fast_choice.make_fast`
(and so ``Predictor(fast=True)``) then serves int8 when the calibration passed for this CPU's
scheme, and otherwise falls back to the float fast mode and says why (``note``).

Modules (one concept each; nothing is imported here, so importing one never pulls in the rest):
:mod:`~sidn.int8.scheme` (which scheme this CPU computes exactly, mode names),
:mod:`~sidn.int8.quant` (affine quantisation, range observation, the deconvolution rewrite),
:mod:`~sidn.int8.layers` (the oneDNN int8 layers), :mod:`~sidn.int8.model` (:class:`Int8SIDN`,
:func:`make_int8`), :mod:`~sidn.int8.record` (:class:`Int8Calibration`, bundle storage,
:func:`attach`), :mod:`~sidn.int8.serve` (:func:`select_int8`: may it be served here) and
:mod:`~sidn.int8.calibrate` (:func:`calibrate_int8`, :func:`parity_report`). The choice between
int8 and the float fast form is :func:`sidn.fast_choice.make_fast`.
"""
