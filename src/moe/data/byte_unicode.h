// GPT-2's byte <-> unicode mapping, which byte-level BPE vocabularies are written in, and the
// UTF-8 helpers the Hugging Face tokenizer needs (hf_bpe_tokenizer.h).
//
// The mapping (Radford et al. 2019, `bytes_to_unicode` of GPT-2's encoder.py; the `tokenizers`
// library's ByteLevel uses the same): the 188 printable bytes '!'..'~', 0xA1..0xAC and
// 0xAE..0xFF map to the code point of the same value; the other 68 bytes (controls, space,
// 0x7F..0xA0, 0xAD), in increasing order, map to U+0100, U+0101, ... U+0143. So every byte
// becomes one visible character: the space 0x20 is 'Ġ' (U+0120), '\n' is 'Ċ' (U+010A).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moe::data {

// The code point byte `b` is written as.
char32_t byte_to_unicode(uint8_t b);
// The byte a code point stands for; nullopt for a code point outside the 256 of the mapping.
std::optional<uint8_t> unicode_to_byte(char32_t c);

// The raw bytes a byte-level token stands for, each character of the mapping being one byte
// ("Ġthe" -> " the"; "é", U+00E9, -> the single byte 0xE9), or nullopt when a character is
// outside the mapping (e.g. U+0301): ByteLevel's decoder then keeps the token's own UTF-8 bytes.
std::optional<std::string> byte_level_bytes(std::string_view token);

// The UTF-8 bytes of a code point (c <= U+10FFFF, not a surrogate) appended to `out`.
void append_utf8(char32_t c, std::string& out);

// The byte offset of the first invalid UTF-8 sequence in `text` (overlong forms, surrogates,
// code points above U+10FFFF and cut sequences are invalid), or nullopt if `text` is valid.
std::optional<size_t> first_invalid_utf8(std::string_view text);

// `bytes` as UTF-8 with every invalid sequence replaced by U+FFFD, one replacement per maximal
// invalid subpart (Unicode's "substitution of maximal subparts", what Rust's
// String::from_utf8_lossy does, so decode() equals `tokenizers`' decode byte for byte).
std::string utf8_lossy(std::string_view bytes);

}  // namespace moe::data
