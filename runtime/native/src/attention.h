// Scaled dot-product self-attention over projected Q, K, V: the ai.smp.Attention kernel.
//
// q, k, v, out: [batch, seq, heads * head_dim] row-major (the projections as the linears
// produce them, no transposes), or q, k, v as the three parts of each row of one packed
// [batch, seq, 3 * heads * head_dim] tensor. Per (batch, head):
//   out_i = sum_j softmax_j(q_i . k_j * scale + m_j) v_j,  m_j = 0 where mask[b, j] != 0,
//   else float32's lowest (Hugging Face BERT's additive mask).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernel.h"

namespace smp {

struct AttentionShape {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  // Row strides (floats) of q / k / v and of out: heads * head_dim, or for q, k, v read from
  // one packed [batch, seq, 3 * heads * head_dim] tensor, 3 * heads * head_dim.
  int64_t ld_in = 0, ld_out = 0;
  float scale = 1.0f;
  bool int8 = false;  // the quantized form (attention_int8.cc); attribute quantize = 1
};

// The int8 form's heads: false when scratch memory runs out.
using Int8HeadFn = bool (*)(const AttentionShape& s, const float* q, const float* k, const float* v,
                            const float* mask_bias, int64_t padded_seq, float* out);
// Most keys, and most head_dim, of the int8 form: keeps its int32 sums exact
// (131,072 x 127 x 127 < 2^31; head_dim x 255 x 127 < 2^31 with the VNNI paths' u8 offset).
constexpr int64_t kMaxInt8AttentionSeq = int64_t(1) << 17;
constexpr int64_t kMaxInt8AttentionHeadDim = int64_t(1) << 16;
bool attention_head_int8_portable(const AttentionShape& s, const float* q, const float* k, const float* v,
                                  const float* mask_bias, int64_t padded_seq, float* out);
// The int8 head for this CPU (SMP_SPARSE_INT8 steers it as for the linears); the vector paths
// need head_dim % 32 == 0 and head_dim <= 128.
Int8HeadFn attention_int8_head(const AttentionShape& s);
// path: 1 avx2, 2 avx-vnni, 3 avx512-vnni (as Int8Path), only where the CPU has it.
Int8HeadFn attention_head_int8_x86(int path);

// Query rows one pass of the AVX2 path scores and mixes together.
constexpr int64_t kAttentionRows = 6;

// One (batch, head): the ISA-specific part. kt is scratch of 2 * head_dim * padded_seq floats
// (K^T, then V packed), scores of kAttentionRows * padded_seq floats (32-byte aligned),
// mask_bias of padded_seq floats.
using AttentionHeadFn = void (*)(const AttentionShape& s, const float* q, const float* k, const float* v,
                                 const float* mask_bias, int64_t padded_seq, float* kt, float* scores, float* out);

void attention_head_portable(const AttentionShape& s, const float* q, const float* k, const float* v,
                             const float* mask_bias, int64_t padded_seq, float* kt, float* scores, float* out);
// Only for head_dim % 8 == 0 and head_dim <= 64, after resolve_isa saw AVX2/FMA.
void attention_head_avx2(const AttentionShape& s, const float* q, const float* k, const float* v,
                         const float* mask_bias, int64_t padded_seq, float* kt, float* scores, float* out);

// mask: null, or [batch, seq] int32 (mask_dtype 6) / int64 (7). Returns "" or an error.
std::string attention(const AttentionShape& shape, const float* q, const float* k, const float* v, const void* mask,
                      int mask_dtype, float* out, Isa isa, Runner& runner);

// Checks the shape of a packed [batch, seq, 3 * heads * head_dim] query/key/value input (q, k
// and v then start at 0, heads * head_dim and 2 * heads * head_dim of each row); fills *shape.
std::string check_packed_attention(const std::vector<int64_t>& qkv, const std::vector<int64_t>* mask, int64_t heads,
                                   int64_t head_dim, AttentionShape* shape);

// Checks the shapes of an ai.smp.Attention call; fills *shape. dims as onnxruntime reports them.
std::string check_attention(const std::vector<int64_t>& q, const std::vector<int64_t>& k,
                            const std::vector<int64_t>& v, const std::vector<int64_t>* mask, int64_t heads,
                            int64_t head_dim, AttentionShape* shape);

}  // namespace smp
