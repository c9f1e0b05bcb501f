// ai.smp.Attention: the driver (one task per batch x head), validation and the portable path.
#include "attention.h"
#include "scratch.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace smp {
namespace {

thread_local Buffer tls_kt, tls_scores, tls_bias;

struct Job {
  AttentionShape shape;
  const float *q, *k, *v;
  const void* mask;
  int mask_dtype;
  float* out;
  AttentionHeadFn head;
  Int8HeadFn int8_head;
  int64_t padded;
  bool per_batch;  // one task per batch element (all its heads) instead of one per head
  bool touch;      // per_batch, and the element's rows fit in 3/4 of a 1 MiB L2: stream them first
  std::atomic<bool> failed{false};
};

// Reads batch element b's rows of q, k and v front to back, one load per cache line: a head
// reads its d columns of every row, lines ld floats apart that the hardware prefetchers do not
// fetch ahead, while a sequential pass streams the whole block (seq x ld floats) into L2 for
// the heads after it. Measured on Zen 4 (MiniLM, batch 32): see runtime/native/README.md.
float touch_rows(const Job& job, int64_t b) {
  const AttentionShape& s = job.shape;
  const bool packed = job.k == job.q + s.heads * s.head_dim;
  float sum = 0.0f;
  for (const float* base : {job.q, job.k, job.v}) {
    const float* row = base + b * s.seq * s.ld_in;
    for (int64_t i = 0; i < s.seq * s.ld_in; i += 16) sum += row[i];
    if (packed) break;   // q, k and v share the rows
  }
  return sum;
}

void run_head(Job& job, int64_t b, int64_t h) {
  const AttentionShape& s = job.shape;
  const bool fp32 = job.int8_head == nullptr;
  float* kt = fp32 ? tls_kt.get(static_cast<size_t>(2 * s.head_dim * job.padded)) : nullptr;
  float* scores = fp32 ? tls_scores.get(static_cast<size_t>(kAttentionRows * job.padded)) : nullptr;
  float* bias = tls_bias.get(static_cast<size_t>(job.padded));
  if ((fp32 && (kt == nullptr || scores == nullptr)) || bias == nullptr) {
    job.failed.store(true);
    return;
  }
  const float lowest = std::numeric_limits<float>::lowest();
  for (int64_t j = 0; j < s.seq; ++j) {
    bool keep = true;
    if (job.mask_dtype == 6) keep = static_cast<const int32_t*>(job.mask)[b * s.seq + j] != 0;
    if (job.mask_dtype == 7) keep = static_cast<const int64_t*>(job.mask)[b * s.seq + j] != 0;
    bias[j] = keep ? 0.0f : lowest;
  }
  for (int64_t j = s.seq; j < job.padded; ++j) bias[j] = -std::numeric_limits<float>::infinity();
  const int64_t in = b * s.seq * s.ld_in + h * s.head_dim, out = b * s.seq * s.ld_out + h * s.head_dim;
  if (fp32) {
    job.head(s, job.q + in, job.k + in, job.v + in, bias, job.padded, kt, scores, job.out + out);
  } else if (!job.int8_head(s, job.q + in, job.k + in, job.v + in, bias, job.padded, job.out + out)) {
    job.failed.store(true);
  }
}

void run_task(void* data, size_t index) {
  Job& job = *static_cast<Job*>(data);
  const int64_t heads = job.shape.heads;
  if (!job.per_batch) {
    run_head(job, static_cast<int64_t>(index) / heads, static_cast<int64_t>(index) % heads);
    return;
  }
  const int64_t b = static_cast<int64_t>(index);
  if (job.touch) {
    volatile float sink = touch_rows(job, b);
    (void)sink;
  }
  for (int64_t h = 0; h < heads; ++h) run_head(job, b, h);
}

}  // namespace

void attention_head_portable(const AttentionShape& s, const float* q, const float* k, const float* v,
                             const float* mask_bias, int64_t padded_seq, float*, float* scores, float* out) {
  const int64_t ld = s.ld_in, d = s.head_dim;
  (void)padded_seq;
  for (int64_t i = 0; i < s.seq; ++i) {
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < s.seq; ++j) {
      float dot = 0.0f;
      for (int64_t c = 0; c < d; ++c) dot += q[i * ld + c] * k[j * ld + c];
      scores[j] = dot * s.scale + mask_bias[j];
      best = std::max(best, scores[j]);
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < s.seq; ++j) {
      scores[j] = std::exp(scores[j] - best);
      sum += scores[j];
    }
    const float inv = 1.0f / sum;
    float* o = out + i * s.ld_out;
    for (int64_t c = 0; c < d; ++c) o[c] = 0.0f;
    for (int64_t j = 0; j < s.seq; ++j) {
      const float p = scores[j] * inv;
      for (int64_t c = 0; c < d; ++c) o[c] += p * v[j * ld + c];
    }
  }
}

std::string check_attention(const std::vector<int64_t>& q, const std::vector<int64_t>& k,
                            const std::vector<int64_t>& v, const std::vector<int64_t>* mask, int64_t heads,
                            int64_t head_dim, AttentionShape* shape) {
  if (heads < 1 || head_dim < 1 || heads > (int64_t(1) << 20) || head_dim > (int64_t(1) << 20))
    return "attribute shape must be [num_heads >= 1, head_dim >= 1]";
  if (q.size() != 3) return "query must have rank 3 [batch, seq, heads * head_dim]";
  if (k != q || v != q) return "key and value must have the query's shape";
  if (q[0] < 0 || q[1] < 0 || q[2] != heads * head_dim)
    return "query's last dimension " + std::to_string(q[2]) + " != num_heads * head_dim = " +
           std::to_string(heads * head_dim);
  if (q[0] > 0 && q[1] > (int64_t(1) << 40) / std::max<int64_t>(1, q[0] * q[2])) return "query is too large";
  if (mask != nullptr && (mask->size() != 2 || (*mask)[0] != q[0] || (*mask)[1] != q[1]))
    return "mask must be [batch, seq] like the query";
  shape->batch = q[0];
  shape->seq = q[1];
  shape->heads = heads;
  shape->head_dim = head_dim;
  shape->ld_in = shape->ld_out = heads * head_dim;
  shape->scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  return "";
}

std::string check_packed_attention(const std::vector<int64_t>& qkv, const std::vector<int64_t>* mask, int64_t heads,
                                   int64_t head_dim, AttentionShape* shape) {
  if (heads < 1 || head_dim < 1 || heads > (int64_t(1) << 20) || head_dim > (int64_t(1) << 20))
    return "attribute shape must be [num_heads >= 1, head_dim >= 1]";
  if (qkv.size() != 3) return "packed query/key/value must have rank 3 [batch, seq, 3 * heads * head_dim]";
  if (qkv[2] != 3 * heads * head_dim)
    return "packed query/key/value's last dimension " + std::to_string(qkv[2]) + " != 3 * num_heads * head_dim = " +
           std::to_string(3 * heads * head_dim);
  std::vector<int64_t> q{qkv[0], qkv[1], heads * head_dim};
  std::string err = check_attention(q, q, q, mask, heads, head_dim, shape);
  if (!err.empty()) return err;
  if (q[0] > 0 && q[1] > (int64_t(1) << 40) / std::max<int64_t>(1, q[0] * qkv[2])) return "query is too large";
  shape->ld_in = qkv[2];
  return "";
}

std::string attention(const AttentionShape& shape, const float* q, const float* k, const float* v, const void* mask,
                      int mask_dtype, float* out, Isa isa, Runner& runner) {
  if (shape.batch == 0 || shape.seq == 0) return "";
  if (mask != nullptr && mask_dtype != 6 && mask_dtype != 7) return "mask must be int32 or int64";
  if (shape.int8 && shape.seq > kMaxInt8AttentionSeq)
    return "the int8 attention takes at most " + std::to_string(kMaxInt8AttentionSeq) + " tokens, got " +
           std::to_string(shape.seq);
  if (shape.int8 && shape.head_dim > kMaxInt8AttentionHeadDim)
    return "the int8 attention takes head_dim at most " + std::to_string(kMaxInt8AttentionHeadDim) + ", got " +
           std::to_string(shape.head_dim);
  Job job;
  job.shape = shape;
  job.q = q;
  job.k = k;
  job.v = v;
  job.mask = mask;
  job.mask_dtype = mask == nullptr ? 0 : mask_dtype;
  job.out = out;
  job.padded = (shape.seq + 31) / 32 * 32;
  const bool vector_ok = shape.head_dim % 8 == 0 && shape.head_dim <= 64;
  job.head = vector_isa(resolve_isa(isa)) && vector_ok ? attention_head_avx2 : attention_head_portable;
  job.int8_head = shape.int8 ? attention_int8_head(shape) : nullptr;
  // Enough batch elements to keep every thread busy: whole elements per task, rows streamed first.
  job.per_batch = shape.batch >= 8 && shape.heads > 1;
  const bool packed = k == q + shape.heads * shape.head_dim;
  job.touch = job.per_batch && shape.seq * shape.ld_in * int64_t(sizeof(float)) * (packed ? 1 : 3) <= (int64_t(768) << 10);
  const int64_t tasks = job.per_batch ? shape.batch : shape.batch * shape.heads;
  std::string err = runner.parallel_for(static_cast<size_t>(tasks), run_task, &job);
  if (err.empty() && job.failed.load()) err = "out of memory for the attention scratch buffers";
  return err;
}

#if !defined(SMP_HAVE_AVX2)
void attention_head_avx2(const AttentionShape& s, const float* q, const float* k, const float* v,
                         const float* mask_bias, int64_t padded_seq, float* kt, float* scores, float* out) {
  attention_head_portable(s, q, k, v, mask_bias, padded_seq, kt, scores, out);
}
#endif

}  // namespace smp
