// GPT-NeoX tokenizer against Hugging Face tokenizers' ids (fixtures in tests/fixtures/tokenizer).
#include "model/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nlohmann/json.hpp"

namespace kvgrid {
namespace {

const std::string kFixtures = KVGRID_FIXTURES_DIR;
const std::string kTokenizerJson = kFixtures + "/tokenizer/gpt-neox-20b-tokenizer.json";

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<int32_t> ParseIds(const std::string& line) {
  std::istringstream in(line);
  std::vector<int32_t> ids;
  int32_t id;
  while (in >> id) ids.push_back(id);
  return ids;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/kvgrid_tokenizer_test_" +
         std::to_string(::getpid()) + "_" + name;
}

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const std::string path = TempPath(name);
  std::ofstream out(path, std::ios::binary);
  out << contents;
  return path;
}

class NeoxTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = Tokenizer::FromFile(kTokenizerJson);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = new Tokenizer(*std::move(tok));
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  static const Tokenizer& tok() { return *tokenizer_; }
  // Hugging Face's ids for `text`, id for id (the first difference named), and the decode gives
  // the text back (NFC).
  static void ExpectIdForIdAndRoundTrip(const std::string& text, const std::vector<int32_t>& expected) {
    const std::vector<int32_t> ids = tok().Encode(text);
    ASSERT_EQ(ids.size(), expected.size());
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_EQ(ids[i], expected[i]) << "first difference at token " << i;
    }
    auto decoded = tok().Decode(ids);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, NormalizeNfc(text));
  }
  static Tokenizer* tokenizer_;
};
Tokenizer* NeoxTokenizerTest::tokenizer_ = nullptr;

// llama.cpp's vocab test format: inputs separated by "\n__ggml_vocab_test__\n" (so the newline
// before each separator line belongs to the separator, and the file ends with one), one line of
// expected ids per input.
struct Vector {
  std::string input;
  std::vector<int32_t> ids;
};
std::vector<Vector> LoadVectors() {
  const std::string inp = ReadFile(kFixtures + "/tokenizer/gpt-neox-vectors.inp");
  const std::string out = ReadFile(kFixtures + "/tokenizer/gpt-neox-vectors.out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> inputs;
  size_t pos = 0;
  while (true) {
    const size_t next = inp.find(sep, pos);
    if (next == std::string::npos) break;
    inputs.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  EXPECT_EQ(pos, inp.size()) << "text after the last separator";
  std::vector<std::string> lines;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  EXPECT_EQ(inputs.size(), lines.size());
  std::vector<Vector> vectors;
  for (size_t i = 0; i < inputs.size() && i < lines.size(); ++i) {
    vectors.push_back({inputs[i], ParseIds(lines[i])});
  }
  return vectors;
}

TEST_F(NeoxTokenizerTest, Metadata) {
  EXPECT_EQ(tok().vocab_size(), 50277);
  EXPECT_EQ(tok().eos_id(), 0);
  EXPECT_EQ(tok().TokenToId("<|endoftext|>"), 0);
  EXPECT_EQ(tok().TokenToId("<|padding|>"), 1);
  EXPECT_EQ(tok().TokenToId("\xC4\xA0the"), 253);  // "Ġthe"
  EXPECT_EQ(tok().TokenToId("  "), 50276);
  EXPECT_EQ(tok().TokenToId("no such token at all"), std::nullopt);
  EXPECT_EQ(tok().IdToToken(253), "\xC4\xA0the");
  EXPECT_EQ(tok().IdToToken(50254), std::string(24, ' '));
  EXPECT_EQ(tok().IdToToken(50277), std::nullopt);
  EXPECT_EQ(tok().IdToToken(-1), std::nullopt);
}

TEST_F(NeoxTokenizerTest, AllHuggingFaceVectors) {
  const std::vector<Vector> vectors = LoadVectors();
  ASSERT_EQ(vectors.size(), 46u);
  for (size_t i = 0; i < vectors.size(); ++i) {
    EXPECT_EQ(tok().Encode(vectors[i].input), vectors[i].ids)
        << "vector #" << i << " input \"" << vectors[i].input << "\"";
  }
}

TEST_F(NeoxTokenizerTest, VectorsRoundTripToNfc) {
  for (const Vector& v : LoadVectors()) {
    auto text = tok().Decode(v.ids);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, NormalizeNfc(v.input));
    auto again = tok().Decode(tok().Encode(v.input));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(*again, NormalizeNfc(v.input));
  }
}

TEST_F(NeoxTokenizerTest, Wikitext20kIdForId) {
  const std::string text = ReadFile(kFixtures + "/tokenizer/wikitext-20k.txt");
  const std::vector<int32_t> expected =
      ParseIds(ReadFile(kFixtures + "/tokenizer/wikitext-20k.ids"));
  ASSERT_EQ(expected.size(), 4477u);
  ExpectIdForIdAndRoundTrip(text, expected);
}

TEST_F(NeoxTokenizerTest, FullWikitextTestSplitCount) {
  const std::string text = ReadFile(kFixtures + "/text/wikitext-2-raw-v1-test.txt");
  ASSERT_EQ(text.size(), 1296370u);
  const std::vector<int32_t> ids = tok().Encode(text);
  EXPECT_EQ(ids.size(), 288730u);
  // The 20 kB fixture is a prefix of this text; its ids are a prefix too (up to the cut).
  const std::vector<int32_t> head =
      ParseIds(ReadFile(kFixtures + "/tokenizer/wikitext-20k.ids"));
  ASSERT_GE(ids.size(), head.size());
  EXPECT_TRUE(std::equal(head.begin(), head.end() - 10, ids.begin()));
  auto decoded = tok().Decode(ids);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, NormalizeNfc(text));
  // Encoding again (word cache warm) gives the same ids.
  EXPECT_EQ(tok().Encode(text), ids);
}

// PG-19 test book 10146 byte for byte (CRLF line ends, PG-19's <DWnn> masks): Hugging Face's
// 62,581 ids for the whole file, id for id, and the decode gives the file back.
TEST_F(NeoxTokenizerTest, Pg19Book10146IdForId) {
  const std::string text = ReadFile(kFixtures + "/text/pg19-test-10146.txt");
  ASSERT_EQ(text.size(), 253872u);
  const std::vector<int32_t> expected = ParseIds(ReadFile(kFixtures + "/text/pg19-test-10146.ids"));
  ASSERT_EQ(expected.size(), 62581u);
  ExpectIdForIdAndRoundTrip(text, expected);
}

TEST_F(NeoxTokenizerTest, EmptyAndWhitespace) {
  EXPECT_TRUE(tok().Encode("").empty());
  EXPECT_EQ(tok().Encode(" "), std::vector<int32_t>({209}));
  EXPECT_EQ(tok().Encode("  "), std::vector<int32_t>({50276}));
  // 30 spaces: the longest whitespace added token (24) first, then 6.
  EXPECT_EQ(tok().Encode(std::string(30, ' ')), std::vector<int32_t>({50254, 50272}));
  auto d = tok().Decode({});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "");
}

TEST_F(NeoxTokenizerTest, SpecialTokensSplitFirst) {
  EXPECT_EQ(tok().Encode("<|endoftext|>"), std::vector<int32_t>({0}));
  EXPECT_EQ(tok().Encode("<|padding|>"), std::vector<int32_t>({1}));
  const std::vector<int32_t> hello = tok().Encode("Hello");
  const std::vector<int32_t> world = tok().Encode(" world");
  std::vector<int32_t> expected = hello;
  expected.push_back(0);
  expected.insert(expected.end(), world.begin(), world.end());
  EXPECT_EQ(tok().Encode("Hello<|endoftext|> world"), expected);
  auto text = tok().Decode(expected);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "Hello<|endoftext|> world");
  // A partial special token is ordinary text.
  EXPECT_NE(tok().Encode("<|endoftext"), std::vector<int32_t>({0}));
}

TEST_F(NeoxTokenizerTest, NfcNormalization) {
  // "e" + COMBINING ACUTE ACCENT normalises to U+00E9 before tokenization.
  EXPECT_EQ(tok().Encode("caf\x65\xCC\x81"), tok().Encode("caf\xC3\xA9"));
  EXPECT_EQ(NormalizeNfc("\x65\xCC\x81"), "\xC3\xA9");
  // Hangul jamo compose.
  EXPECT_EQ(NormalizeNfc("\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");
  auto text = tok().Decode(tok().Encode("caf\x65\xCC\x81"));
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "caf\xC3\xA9");
}

TEST(Utf8Repair, MaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(RepairUtf8("abc"), "abc");
  EXPECT_EQ(RepairUtf8("\xC3\xA9"), "\xC3\xA9");
  EXPECT_EQ(RepairUtf8("\xFF"), r);
  EXPECT_EQ(RepairUtf8("a\xC3"), "a" + r);
  EXPECT_EQ(RepairUtf8("\xE0\x80"), r + r);                // E0 needs A0..BF next
  EXPECT_EQ(RepairUtf8("\xF0\x9F\x98"), r);                // truncated 4-byte sequence
  EXPECT_EQ(RepairUtf8("\xF0\x9F\x98x"), r + "x");
  EXPECT_EQ(RepairUtf8("\xED\xA0\x80"), r + r + r);        // surrogate
  EXPECT_EQ(RepairUtf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(RepairUtf8(std::string("a\0b", 3)), std::string("a\0b", 3));
}

TEST_F(NeoxTokenizerTest, InvalidUtf8DoesNotCrash) {
  const std::string bad = "ab\xFF\xFE cd \xC3 \xE2\x82 e\xF0\x9F\x98";
  const std::vector<int32_t> ids = tok().Encode(bad);
  EXPECT_EQ(ids, tok().Encode(RepairUtf8(bad)));
  auto text = tok().Decode(ids);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, RepairUtf8(bad));
  // Every single byte value, alone and in a run.
  std::string all;
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    EXPECT_FALSE(tok().Encode(one).empty()) << "byte " << b;
    all += one;
  }
  auto all_text = tok().Decode(tok().Encode(all));
  ASSERT_TRUE(all_text.ok());
  EXPECT_EQ(*all_text, NormalizeNfc(all));
  // NUL bytes are ordinary characters.
  const std::string with_nul("a\0b", 3);
  auto nul_text = tok().Decode(tok().Encode(with_nul));
  ASSERT_TRUE(nul_text.ok());
  EXPECT_EQ(*nul_text, with_nul);
}

TEST_F(NeoxTokenizerTest, DecodeBytesKeepsPartialCharacters) {
  // "é" is split over ids only when it is part of a byte-level pair; decode each id of "😀".
  const std::vector<int32_t> ids = tok().Encode("\xF0\x9F\x98\x80");
  ASSERT_GE(ids.size(), 2u);
  std::string bytes;
  for (int32_t id : ids) {
    auto b = tok().DecodeBytes({id});
    ASSERT_TRUE(b.ok());
    bytes += *b;
  }
  EXPECT_EQ(bytes, "\xF0\x9F\x98\x80");
  auto lossy = tok().Decode({ids[0]});
  ASSERT_TRUE(lossy.ok());
  EXPECT_EQ(*lossy, "\xEF\xBF\xBD");
}

TEST_F(NeoxTokenizerTest, DecodeOutOfVocabularyIdIsAnError) {
  auto text = tok().Decode({12092, 50277, 5});
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(text.status().message().find("50277"), std::string::npos) << text.status();
  auto neg = tok().Decode({-3});
  ASSERT_FALSE(neg.ok());
  EXPECT_NE(neg.status().message().find("-3"), std::string::npos) << neg.status();
  EXPECT_TRUE(tok().Decode({50276}).ok());
}

TEST_F(NeoxTokenizerTest, LongWordsAndRuns) {
  // A 200 kB single "word" (one regex match) and long whitespace / newline runs.
  const std::string long_word(200000, 'a');
  const std::vector<int32_t> ids = tok().Encode(long_word);
  EXPECT_LT(ids.size(), long_word.size());
  auto text = tok().Decode(ids);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, long_word);
  const std::string runs = std::string(1000, '\n') + std::string(1000, ' ') + "x" +
                           std::string(77, '\t') + std::string(5, ' ');
  auto runs_text = tok().Decode(tok().Encode(runs));
  ASSERT_TRUE(runs_text.ok());
  EXPECT_EQ(*runs_text, runs);
}

TEST_F(NeoxTokenizerTest, ConcurrentEncodeIsConsistent) {
  const std::string text = ReadFile(kFixtures + "/tokenizer/wikitext-20k.txt");
  const std::vector<int32_t> expected =
      ParseIds(ReadFile(kFixtures + "/tokenizer/wikitext-20k.ids"));
  Tokenizer copy = tok();  // copies share state
  std::vector<std::vector<int32_t>> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] { results[t] = (t % 2 ? copy : tok()).Encode(text); });
  }
  for (auto& th : threads) th.join();
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

TEST_F(NeoxTokenizerTest, RandomTextRoundTrips) {
  // Deterministic pseudo-random mixes of ASCII, whitespace runs, multi-byte and combining
  // characters, special tokens and invalid bytes: no crash, and decode(encode(x)) == NFC(x).
  const std::vector<std::string> atoms = {
      "a", "Z", "7", " ", "  ", "\n", "\t", "'s", "'LL", "!", "...", "\xC3\xA9", "e\xCC\x81",
      "\xE4\xB8\xAD", "\xF0\x9F\x98\x80", "\xE3\x80\x80", "\xC2\xA0", "\xE1\xA0\x8E", "<|endoftext|>",
      "<|padding|>", "<|endof", "\xFF", "\xC3", "\xE2\x82", "\x00", "\r\n", "\xCC\x81"};
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&state]() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const int len = static_cast<int>(next() % 60);
    for (int i = 0; i < len; ++i) text += atoms[next() % atoms.size()];
    const std::vector<int32_t> ids = tok().Encode(text);
    EXPECT_EQ(tok().Encode(text), ids);  // second time through the word cache
    auto decoded = tok().Decode(ids);
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, NormalizeNfc(text)) << "round " << round;
  }
}

// --- errors -----------------------------------------------------------------------------------

TEST(TokenizerErrors, MissingFile) {
  const std::string path = TempPath("does-not-exist.json");
  auto tok = Tokenizer::FromFile(path);
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status();
}

TEST(TokenizerErrors, NotJson) {
  const std::string path = WriteTemp("not.json", "this is { not json");
  auto tok = Tokenizer::FromFile(path);
  std::remove(path.c_str());
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status();
  EXPECT_NE(tok.status().message().find("JSON"), std::string::npos) << tok.status();
}

nlohmann::json NeoxJson() { return nlohmann::json::parse(ReadFile(kTokenizerJson)); }

void ExpectLoadError(const nlohmann::json& j, const std::string& needle) {
  auto tok = Tokenizer::FromJsonString(j.dump(), "my-tokenizer.json");
  ASSERT_FALSE(tok.ok()) << "expected an error mentioning " << needle;
  EXPECT_NE(tok.status().message().find("my-tokenizer.json"), std::string::npos)
      << tok.status();
  EXPECT_NE(tok.status().message().find(needle), std::string::npos) << tok.status();
}

TEST(TokenizerErrors, MissingOrMalformedFields) {
  nlohmann::json j = NeoxJson();
  j["model"].erase("vocab");
  ExpectLoadError(j, "model.vocab");

  j = NeoxJson();
  j["model"].erase("merges");
  ExpectLoadError(j, "model.merges");

  j = NeoxJson();
  j.erase("model");
  ExpectLoadError(j, "model");

  j = NeoxJson();
  j["model"]["type"] = "WordPiece";
  ExpectLoadError(j, "WordPiece");

  j = NeoxJson();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  ExpectLoadError(j, "Whitespace");

  j = NeoxJson();
  j["normalizer"] = {{"type", "Lowercase"}};
  ExpectLoadError(j, "Lowercase");

  j = NeoxJson();
  j["model"]["merges"][5] = "nospace";
  ExpectLoadError(j, "model.merges[5]");

  j = NeoxJson();
  j["model"]["merges"][7] = "zzzqqq xxxyyy";
  ExpectLoadError(j, "model.merges[7]");

  j = NeoxJson();
  j["model"]["vocab"]["hello"] = "seven";
  ExpectLoadError(j, "hello");

  j = NeoxJson();
  j["added_tokens"][0].erase("content");
  ExpectLoadError(j, "added_tokens[0]");

  ExpectLoadError(nlohmann::json::array({1, 2}), "object");
}

TEST(TokenizerFormats, MergesAsPairsLoadTheSame) {
  nlohmann::json j = NeoxJson();
  for (auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    m = nlohmann::json::array({s.substr(0, sp), s.substr(sp + 1)});
  }
  auto pairs = Tokenizer::FromJsonString(j.dump(), "pairs.json");
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  auto strings = Tokenizer::FromFile(kTokenizerJson);
  ASSERT_TRUE(strings.ok());
  const std::string text = ReadFile(kFixtures + "/tokenizer/wikitext-20k.txt");
  EXPECT_EQ(pairs->Encode(text), strings->Encode(text));
}

// --- added-token flags, on a tiny byte-level tokenizer ------------------------------------------

// GPT-2 byte -> unicode character, as UTF-8.
std::string ByteChar(int b) {
  const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  int cp = b;
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x) {
      const bool p = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE);
      if (!p) ++n;
    }
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

Tokenizer TinyTokenizer() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;  // id == byte value
  vocab["ab"] = 256;
  vocab[ByteChar(' ') + "ab"] = 257;
  nlohmann::json j = {
      {"version", "1.0"},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", nlohmann::json::array({"a b", ByteChar(' ') + " ab"})}}},
      {"added_tokens",
       nlohmann::json::array(
           {{{"id", 300}, {"content", "<mask>"}, {"special", true}, {"normalized", false},
             {"lstrip", true}, {"rstrip", false}, {"single_word", false}},
            {{"id", 301}, {"content", "[R]"}, {"special", true}, {"normalized", false},
             {"lstrip", false}, {"rstrip", true}, {"single_word", false}},
            {{"id", 302}, {"content", "WORD"}, {"special", false}, {"normalized", true},
             {"lstrip", false}, {"rstrip", false}, {"single_word", true}},
            {{"id", 303}, {"content", "caf\xC3\xA9"}, {"special", false}, {"normalized", true}},
            {{"id", 304}, {"content", "RAW\xC3\xA9"}, {"special", true}, {"normalized", false}}})}};
  auto tok = Tokenizer::FromJsonString(j.dump(), "tiny.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return *std::move(tok);
}

using Ids = std::vector<int32_t>;

TEST(AddedTokenFlags, MergesAndPlainBytes) {
  const Tokenizer tok = TinyTokenizer();
  EXPECT_EQ(tok.vocab_size(), 305);
  EXPECT_EQ(tok.eos_id(), -1);
  EXPECT_EQ(tok.Encode("ab"), Ids({256}));
  EXPECT_EQ(tok.Encode("x ab"), Ids({'x', 257}));
  EXPECT_EQ(tok.Encode("ba"), Ids({'b', 'a'}));
}

TEST(AddedTokenFlags, LstripSwallowsWhitespaceOnTheLeft) {
  const Tokenizer tok = TinyTokenizer();
  EXPECT_EQ(tok.Encode("x  <mask>y"), Ids({'x', 300, 'y'}));
  EXPECT_EQ(tok.Encode("<mask> y"), Ids({300, ' ', 'y'}));
}

TEST(AddedTokenFlags, RstripSwallowsWhitespaceOnTheRight) {
  const Tokenizer tok = TinyTokenizer();
  EXPECT_EQ(tok.Encode("x [R]  y"), Ids({'x', ' ', 301, 'y'}));
}

TEST(AddedTokenFlags, SingleWordOnlyMatchesWholeWords) {
  const Tokenizer tok = TinyTokenizer();
  EXPECT_EQ(tok.Encode("x WORD y"), Ids({'x', ' ', 302, ' ', 'y'}));
  EXPECT_EQ(tok.Encode("WORD"), Ids({302}));
  EXPECT_EQ(tok.Encode("xWORD"), Ids({'x', 'W', 'O', 'R', 'D'}));
  EXPECT_EQ(tok.Encode("WORDs"), Ids({'W', 'O', 'R', 'D', 's'}));
}

TEST(AddedTokenFlags, NormalizedTokensMatchAfterNfc) {
  const Tokenizer tok = TinyTokenizer();
  // Normalized token: matches the decomposed spelling after NFC.
  EXPECT_EQ(tok.Encode("caf\xC3\xA9"), Ids({303}));
  EXPECT_EQ(tok.Encode("cafe\xCC\x81"), Ids({303}));
  // Non-normalized token: matched on the raw text only.
  EXPECT_EQ(tok.Encode("RAW\xC3\xA9"), Ids({304}));
  EXPECT_NE(tok.Encode("RAWe\xCC\x81"), Ids({304}));
  auto text = tok.Decode({300, 301, 302});
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "<mask>[R]WORD");
  // As in tokenizers, added tokens go through the ByteLevel decoder too: "é" (U+00E9) is the
  // byte-level character of byte 0xE9, so a non-ASCII added token decodes to a lone byte.
  auto quirk = tok.Decode({303});
  ASSERT_TRUE(quirk.ok());
  EXPECT_EQ(*quirk, "caf\xEF\xBF\xBD");
}

}  // namespace
}  // namespace kvgrid
