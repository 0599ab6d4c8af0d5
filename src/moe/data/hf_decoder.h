// The decoders of Hugging Face tokenizers of the SentencePiece kind (Llama-2, Mixtral, BPE with
// byte_fallback and Metaspace): a chain of steps over the tokens of decode(ids), as
// `tokenizers`' decoders::Sequence runs them; the result is the concatenation of the tokens.
//
//   Replace(String a, b)   every a in each token -> b
//   ByteFallback           runs of "<0xXX>" tokens -> their bytes as one token when the run is
//                          valid UTF-8, else one U+FFFD per byte of the run
//   Fuse                   all tokens -> one
//   Strip(c, start, stop)  up to `start` leading and `stop` trailing characters c off each token
//   Metaspace(r, scheme)   r -> ' ' in each token, except that the first token drops its r's
//                          when the prepend scheme is not "never"
//
// (The byte-level decoder of GPT-2-style files is hf_bpe_tokenizer.cpp's own.)
#pragma once

#include <string>
#include <vector>

namespace moe::data {

struct HfDecoderStep {
  enum class Kind { kReplace, kByteFallback, kFuse, kStrip, kMetaspace } kind;
  std::string from, to;        // Replace: from -> to; Strip, Metaspace: `from` is the character
  size_t start = 0, stop = 0;  // Strip
  bool drop_first = false;     // Metaspace: prepend_scheme != never
};

// The text of `tokens` after the steps.
std::string run_hf_decoder(const std::vector<HfDecoderStep>& steps,
                           std::vector<std::string> tokens);

}  // namespace moe::data
