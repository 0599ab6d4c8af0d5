// HF <-> moecore tensor conversion (convert.h).
#include "moe/checkpoint/convert.h"

#include <cstring>
#include <set>

#include "moe/core/error.h"

namespace moe::checkpoint {

namespace {

std::string scale_name(const std::string& name) { return name + kScaleSuffix; }

bool ends_with_scale(const std::string& name) { return name.ends_with(kScaleSuffix); }

std::string base_of_scale(const std::string& name) {
  return name.substr(0, name.size() - std::strlen(kScaleSuffix));
}

// Appends `t`'s bytes to `out` at byte `offset`.
void put_bytes(Tensor& out, size_t& offset, const Tensor& t) {
  MOE_CHECK(offset + t.nbytes() <= out.nbytes(), "internal: fused tensor overflow");
  if (t.nbytes() > 0) std::memcpy(static_cast<char*>(out.raw()) + offset, t.raw(), t.nbytes());
  offset += t.nbytes();
}

// Bytes [offset, offset + nbytes(shape)) of `in` as a new tensor of `shape`.
Tensor take_bytes(const Tensor& in, size_t& offset, const Shape& shape) {
  Tensor t = Tensor::empty(shape, in.dtype());
  MOE_CHECK(offset + t.nbytes() <= in.nbytes(), "internal: fused tensor underflow");
  if (t.nbytes() > 0) std::memcpy(t.raw(), static_cast<const char*>(in.raw()) + offset, t.nbytes());
  offset += t.nbytes();
  return t;
}

// Experts [first, first + n) of a moecore FP8 tensor (`fused`, its fused per-part scales
// `scales`; n = fused.size(0) when stacked, else the one "expert") dequantized part by part.
Tensor dequantize_moecore_rows(const TensorMapping& m, const Tensor& fused, const Tensor& scales,
                               Fp8BlockSize block, DType dequantized_dtype, int64_t first) {
  Tensor out = Tensor::empty(fused.shape(), dequantized_dtype);
  const int64_t experts = m.stacked ? fused.size(0) : 1;
  size_t offset = 0, scale_offset = 0, out_offset = 0;
  for (int64_t e = first; e < first + experts; ++e) {
    const auto& expert = m.hf_names.at(static_cast<size_t>(e));
    for (size_t p = 0; p < expert.size(); ++p) {
      const Tensor w = take_bytes(fused, offset, m.part_shapes[p]);
      const Tensor s = take_bytes(scales, scale_offset, fp8_scale_shape(m.part_shapes[p], block));
      put_bytes(out, out_offset, dequantize_fp8_blocks(w, s, dequantized_dtype, block, m.name));
    }
  }
  return out;
}

// The fused scale's shape: the parts' scale rows added up (stacked over experts).
Shape fused_scale_shape(const TensorMapping& m, Fp8BlockSize block) {
  int64_t rows = 0, cols = -1;
  for (const Shape& part : m.part_shapes) {
    const Shape s = fp8_scale_shape(part, block);
    MOE_CHECK(cols < 0 || cols == s[1], "internal: fused parts of ", m.name,
              " differ in columns");
    rows += s[0];
    cols = s[1];
  }
  if (m.stacked) return {m.num_experts(), rows, cols};
  return {rows, cols};
}

// Every model weight (parameter or buffer) is a float; an integer tensor in its place would be
// cast to float as numbers, silently (an i32 norm weight of 1 is a weight of 1.0, of bits 1 a
// denormal): refused, naming the tensor, its file and its dtype.
void check_float(const TensorSource& src, const std::string& name, DType dtype,
                 const std::string& what) {
  MOE_CHECK(is_floating(dtype), "tensor ", what, " in ", src.where(name), " is ", dtype,
            "; model weights must be a float dtype (f64, f32, bf16, f16 or FP8)");
}

// Names a tensor for messages, with the moecore tensor it belongs to.
std::string part_of(const std::string& hf_name, const TensorMapping& m) {
  return m.identity() && hf_name == m.name ? hf_name : hf_name + " (part of moecore " + m.name + ")";
}

void check_scale(const TensorSource& src, const std::string& weight, const Shape& weight_shape,
                 DType weight_dtype, Fp8BlockSize block, const std::string& what) {
  const std::string scale = scale_name(weight);
  if (!is_fp8(weight_dtype)) {
    MOE_CHECK(!src.contains(scale), "tensor ", scale, " in ", src.where(scale), " holds block ",
              "scales, but ", weight, " is ", weight_dtype, ", not FP8");
    return;
  }
  MOE_CHECK(src.contains(scale), "FP8 tensor ", what, " in ", src.where(weight),
            " has no block scales ", scale, " in ", src.description());
  const SourceTensorInfo s = src.info(scale);
  MOE_CHECK(s.dtype == DType::f32 || s.dtype == DType::bf16 || s.dtype == DType::f64 ||
                s.dtype == DType::f16,
            "block scales ", scale, " in ", src.where(scale), " are ", s.dtype,
            ", not a float dtype");
  const Shape expected = weight_shape.size() == 2 ? fp8_scale_shape(weight_shape, block) : Shape{};
  MOE_CHECK(weight_shape.size() == 2, "FP8 tensor ", what, " in ", src.where(weight),
            " has shape ", shape_str(weight_shape), "; block-scaled FP8 weights are 2-D");
  MOE_CHECK(s.shape == expected, "block scales ", scale, " in ", src.where(scale), " have shape ",
            shape_str(s.shape), ", expected ", shape_str(expected), " for a ",
            shape_str(weight_shape), " weight in ", block.rows, "x", block.cols, " blocks");
}

}  // namespace

// ---- names ---------------------------------------------------------------------------------

namespace {

void check_names(const nn::ModelConfig& config, const std::set<std::string>& expected,
                 const TensorSource& src, const char* side, bool hf) {
  std::vector<std::string> unexpected;
  for (const std::string& name : src.names()) {
    if (expected.count(name) || (hf && ignored_hf_tensor(name))) continue;
    if (ends_with_scale(name) && expected.count(base_of_scale(name))) continue;
    unexpected.push_back(name);
  }
  if (unexpected.empty()) return;
  std::string list;
  for (size_t i = 0; i < unexpected.size() && i < 5; ++i)
    list += "\n  " + unexpected[i] + " in " + src.where(unexpected[i]);
  if (unexpected.size() > 5) list += "\n  ... and " + std::to_string(unexpected.size() - 5) + " more";
  MOE_FAIL(src.description(), " holds ", unexpected.size(), " tensor(s) that a ", side,
           " checkpoint of model ", config.name, " (family ", config.family, ", ",
           config.num_layers, " layers, ", config.mtp_num_layers,
           " MTP layers) does not have:", list);
}

}  // namespace

void check_hf_names(const nn::ModelConfig& config, const std::vector<UnitMapping>& units,
                    const TensorSource& hf) {
  std::set<std::string> expected;
  for (const UnitMapping& u : units) {
    for (const TensorMapping& m : u.tensors)
      for (const auto& expert : m.hf_names) expected.insert(expert.begin(), expert.end());
    for (const HfCopy& c : u.copies) expected.insert(c.hf_name);
  }
  check_names(config, expected, hf, "Hugging Face", true);
}

void check_moecore_names(const nn::ModelConfig& config, const std::vector<UnitMapping>& units,
                         const TensorSource& moecore) {
  std::set<std::string> expected;
  for (const UnitMapping& u : units)
    for (const TensorMapping& m : u.tensors) expected.insert(m.name);
  check_names(config, expected, moecore, "moecore", false);
}

// ---- HF -> moecore -------------------------------------------------------------------------

DType check_hf_part(const TensorMapping& m, const TensorSource& hf, int64_t expert, size_t part,
                    Fp8BlockSize block, FusedDType& fused) {
  const std::string& name = m.hf_names.at(static_cast<size_t>(expert)).at(part);
  MOE_CHECK(hf.contains(name), "missing tensor ", part_of(name, m), " in ", hf.description());
  const SourceTensorInfo info = hf.info(name);
  check_float(hf, name, info.dtype, part_of(name, m));
  MOE_CHECK(info.shape == m.part_shapes[part], "tensor ", part_of(name, m), " in ", hf.where(name),
            " has shape ", shape_str(info.shape), ", but the model config ", "needs ",
            shape_str(m.part_shapes[part]));
  if (!fused.dtype) {
    fused.dtype = info.dtype;
    fused.first_part = name;
  }
  MOE_CHECK(info.dtype == *fused.dtype, "tensors ", fused.first_part, " (", *fused.dtype, ") and ",
            name, " (", info.dtype, ") in ", hf.description(), " are fused into moecore ", m.name,
            " and must share a dtype");
  check_scale(hf, name, info.shape, info.dtype, block, part_of(name, m));
  return info.dtype;
}

namespace {

void hf_tensor_to_moecore(const TensorMapping& m, const TensorSource& hf,
                          const ConvertOptions& options, const TensorSink& sink) {
  // Check every part before loading any.
  FusedDType fused;
  for (size_t e = 0; e < m.hf_names.size(); ++e)
    for (size_t p = 0; p < m.hf_names[e].size(); ++p)
      check_hf_part(m, hf, static_cast<int64_t>(e), p, options.block, fused);
  const std::optional<DType>& dtype = fused.dtype;
  const bool fp8 = is_fp8(*dtype);
  if (fp8 && options.dequantize) {
    Tensor out = Tensor::empty(m.shape, options.dequantized_dtype);
    size_t offset = 0;
    for (const auto& expert : m.hf_names)
      for (const std::string& name : expert)
        put_bytes(out, offset,
                  dequantize_fp8_blocks(hf.load(name), hf.load(scale_name(name)),
                                        options.dequantized_dtype, options.block, name));
    sink(m.name, out);
    return;
  }
  Tensor out = Tensor::empty(m.shape, *dtype);
  size_t offset = 0;
  for (const auto& expert : m.hf_names)
    for (const std::string& name : expert) put_bytes(out, offset, hf.load(name));
  sink(m.name, out);
  if (!fp8) return;

  // Kept FP8: the scales fused as the weights are.
  const DType scale_dtype = hf.info(scale_name(m.hf_names[0][0])).dtype;
  Tensor scales = Tensor::empty(fused_scale_shape(m, options.block), scale_dtype);
  size_t scale_offset = 0;
  for (const auto& expert : m.hf_names)
    for (const std::string& name : expert) {
      const Tensor s = hf.load(scale_name(name));
      MOE_CHECK(s.dtype() == scale_dtype, "block scales ", scale_name(name), " in ",
                hf.where(scale_name(name)), " are ", s.dtype(), " but ",
                scale_name(m.hf_names[0][0]), " are ", scale_dtype,
                "; they are fused into one tensor and must share a dtype");
      put_bytes(scales, scale_offset, s);
    }
  if (m.part_shapes.size() > 1 && options.note) {
    for (const Shape& part : m.part_shapes)
      if (part[0] % options.block.rows != 0) {
        options.note("FP8 kept for " + m.name + ": its parts have " + std::to_string(part[0]) +
                     " rows, not a multiple of the " + std::to_string(options.block.rows) +
                     "-row block, so fusing them cuts a block: the fused scales " +
                     scale_name(m.name) + " restart their block grid at every part (gate, up); " +
                     "moecore reads them so, a reader expecting one grid over the fused tensor " +
                     "would not");
        break;
      }
  }
  sink(scale_name(m.name), scales);
}

void check_copy(const HfCopy& copy, const TensorSource& hf) {
  if (copy.optional && !hf.contains(copy.hf_name)) return;
  MOE_CHECK(hf.contains(copy.hf_name), "missing tensor ", copy.hf_name, " (the MTP layer's copy of ",
            copy.original, ") in ", hf.description());
  MOE_CHECK(hf.contains(copy.original), "missing tensor ", copy.original, " in ",
            hf.description());
  const SourceTensorInfo a = hf.info(copy.hf_name), b = hf.info(copy.original);
  bool same = a.dtype == b.dtype && a.shape == b.shape;
  if (same) {
    const Tensor x = hf.load(copy.hf_name), y = hf.load(copy.original);
    same = std::memcmp(x.raw(), y.raw(), x.nbytes()) == 0;
  }
  MOE_CHECK(same, "tensor ", copy.hf_name, " in ", hf.where(copy.hf_name), " (", a.dtype, " ",
            shape_str(a.shape), ") differs from ", copy.original, " in ", hf.where(copy.original),
            " (", b.dtype, " ", shape_str(b.shape), "): in moecore both are one shared tensor ",
            "(the embedding / output head), so a checkpoint whose copies differ cannot be held");
}

}  // namespace

void unit_hf_to_moecore(const UnitMapping& unit, const TensorSource& hf,
                        const ConvertOptions& options, const TensorSink& sink) {
  for (const TensorMapping& m : unit.tensors) hf_tensor_to_moecore(m, hf, options, sink);
  for (const HfCopy& copy : unit.copies) check_copy(copy, hf);
}

// ---- moecore -> HF -------------------------------------------------------------------------

DType check_moecore_tensor(const TensorMapping& m, const TensorSource& src, Fp8BlockSize block) {
  MOE_CHECK(src.contains(m.name), "missing tensor ", m.name, " in ", src.description());
  const SourceTensorInfo info = src.info(m.name);
  check_float(src, m.name, info.dtype, m.name);
  MOE_CHECK(info.shape == m.shape, "tensor ", m.name, " in ", src.where(m.name), " has shape ",
            shape_str(info.shape), ", but the model config needs ", shape_str(m.shape));
  const std::string scale = scale_name(m.name);
  if (!is_fp8(info.dtype)) {
    MOE_CHECK(!src.contains(scale), "tensor ", scale, " in ", src.where(scale),
              " holds block scales, but ", m.name, " is ", info.dtype, ", not FP8");
    return info.dtype;
  }
  MOE_CHECK(src.contains(scale), "FP8 tensor ", m.name, " in ", src.where(m.name),
            " has no block scales ", scale, " in ", src.description());
  for (const Shape& part : m.part_shapes)
    MOE_CHECK(part.size() == 2, "FP8 tensor ", m.name, " in ", src.where(m.name),
              " is made of parts of shape ", shape_str(part), "; block-scaled FP8 weights are 2-D");
  const SourceTensorInfo s = src.info(scale);
  const Shape expected = fused_scale_shape(m, block);
  MOE_CHECK(s.shape == expected, "block scales ", scale, " in ", src.where(scale), " have shape ",
            shape_str(s.shape), ", expected ", shape_str(expected), " (", block.rows, "x",
            block.cols, " blocks of each part of ", m.name, ")");
  MOE_CHECK(is_floating(s.dtype) && !is_fp8(s.dtype), "block scales ", scale, " in ",
            src.where(scale), " are ", s.dtype, ", not a float dtype");
  return info.dtype;
}

void unit_moecore_to_hf(const UnitMapping& unit, const TensorSource& moecore,
                        const ConvertOptions& options, const TensorSink& sink) {
  for (const TensorMapping& m : unit.tensors) {
    const DType dtype = check_moecore_tensor(m, moecore, options.block);
    const Tensor fused = moecore.load(m.name);
    Tensor scales;
    if (is_fp8(dtype)) scales = moecore.load(scale_name(m.name));
    size_t offset = 0, scale_offset = 0;
    for (const auto& expert : m.hf_names)
      for (size_t p = 0; p < expert.size(); ++p) {
        sink(expert[p], take_bytes(fused, offset, m.part_shapes[p]));
        if (scales.defined())
          sink(scale_name(expert[p]),
               take_bytes(scales, scale_offset, fp8_scale_shape(m.part_shapes[p], options.block)));
      }
  }
  for (const HfCopy& copy : unit.copies) {
    if (copy.optional) continue;
    MOE_CHECK(moecore.contains(copy.original), "missing tensor ", copy.original, " (needed for ",
              copy.hf_name, ") in ", moecore.description());
    sink(copy.hf_name, moecore.load(copy.original));
  }
}

Tensor load_moecore_tensor(const TensorMapping& m, const TensorSource& src, Fp8BlockSize block,
                           DType dequantized_dtype) {
  const DType dtype = check_moecore_tensor(m, src, block);
  if (!is_fp8(dtype)) return src.load(m.name);
  return dequantize_moecore_rows(m, src.load(m.name), src.load(scale_name(m.name)), block,
                                 dequantized_dtype, 0);
}

Tensor load_moecore_rows(const TensorMapping& m, const TensorSource& src, Fp8BlockSize block,
                         DType dequantized_dtype, int64_t begin, int64_t end) {
  const DType dtype = check_moecore_tensor(m, src, block);
  if (!is_fp8(dtype)) return src.load_rows(m.name, begin, end);
  // The fused scales are [E, rows, cols] for stacked experts: rows of the scales are experts as
  // for the weight. An unstacked tensor's parts do not split by rows: read whole.
  MOE_CHECK(m.stacked || (begin == 0 && end == m.shape.at(0)), "internal: rows [", begin, ", ", end,
            ") of the unstacked FP8 tensor ", m.name);
  return dequantize_moecore_rows(m, src.load_rows(m.name, begin, end),
                                 src.load_rows(scale_name(m.name), begin, end), block,
                                 dequantized_dtype, begin);
}

// ---- maps ----------------------------------------------------------------------------------

std::map<std::string, Tensor> hf_to_moecore(const nn::ModelConfig& config,
                                            const std::map<std::string, Tensor>& hf_tensors,
                                            bool dequantize, DType dequantized_dtype) {
  const MapTensorSource source(hf_tensors, "the Hugging Face tensor map");
  const std::vector<UnitMapping> units = hf_model_mapping(config);
  check_hf_names(config, units, source);
  ConvertOptions options;
  options.dequantize = dequantize;
  options.dequantized_dtype = dequantized_dtype;
  std::map<std::string, Tensor> out;
  for (const UnitMapping& unit : units)
    unit_hf_to_moecore(unit, source, options,
                       [&](const std::string& name, Tensor t) { out[name] = std::move(t); });
  return out;
}

std::map<std::string, Tensor> moecore_to_hf(const nn::ModelConfig& config,
                                            const std::map<std::string, Tensor>& tensors) {
  const MapTensorSource source(tensors, "the moecore tensor map");
  const std::vector<UnitMapping> units = hf_model_mapping(config);
  check_moecore_names(config, units, source);
  std::map<std::string, Tensor> out;
  for (const UnitMapping& unit : units)
    unit_moecore_to_hf(unit, source, ConvertOptions{},
                       [&](const std::string& name, Tensor t) { out[name] = std::move(t); });
  return out;
}

}  // namespace moe::checkpoint
