// The `kvgrid tokenize` command logic (RunTokenize), driven without the binary.
#include "model/tokenizer/tokenize_tool.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "model/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace kvgrid {
namespace {

const std::string kFixtures = KVGRID_FIXTURES_DIR;
const std::string kTokenizerJson = kFixtures + "/tokenizer/gpt-neox-20b-tokenizer.json";

std::string WriteTemp(const std::string& name, const std::string& contents) {
  const char* dir = std::getenv("TMPDIR");
  const std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/kvgrid_tokenize_tool_" +
                           std::to_string(::getpid()) + "_" + name;
  std::ofstream out(path, std::ios::binary);
  out << contents;
  return path;
}

struct Result {
  int code;
  std::string out;
  std::string err;
};

Result RunTool(const TokenizeOptions& options) {
  std::ostringstream out, err;
  const int code = RunTokenize(options, out, err);
  return {code, out.str(), err.str()};
}

TEST(TokenizeTool, EncodePrintsIdsOnOneLine) {
  const std::string text = WriteTemp("hello.txt", "Hello world");
  TokenizeOptions o;
  o.tokenizer_path = kTokenizerJson;
  o.text_path = text;
  const Result r = RunTool(o);
  std::remove(text.c_str());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "12092 1533\n");
  EXPECT_EQ(r.err, "");
}

TEST(TokenizeTool, EncodeJson) {
  const std::string text = WriteTemp("hello_json.txt", " Hello World!");
  TokenizeOptions o;
  o.tokenizer_path = kTokenizerJson;
  o.text_path = text;
  o.json = true;
  const Result r = RunTool(o);
  std::remove(text.c_str());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "{\"ids\":[24387,3645,2],\"count\":3}\n");
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["count"], 3);
}

TEST(TokenizeTool, EncodeEmptyFile) {
  const std::string text = WriteTemp("empty.txt", "");
  TokenizeOptions o;
  o.tokenizer_path = kTokenizerJson;
  o.text_path = text;
  o.json = true;
  const Result r = RunTool(o);
  std::remove(text.c_str());
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "{\"ids\":[],\"count\":0}\n");
}

TEST(TokenizeTool, DecodeFromTextOrIdsFile) {
  const std::string ids = WriteTemp("ids.txt", " 24387 3645 2\n");
  TokenizeOptions o;
  o.tokenizer_path = kTokenizerJson;
  o.text_path = ids;
  o.decode = true;
  Result r = RunTool(o);
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, " Hello World!");

  TokenizeOptions o2;
  o2.tokenizer_path = kTokenizerJson;
  o2.ids_path = ids;  // --ids implies --decode
  o2.json = true;
  r = RunTool(o2);
  std::remove(ids.c_str());
  EXPECT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["text"], " Hello World!");
  EXPECT_EQ(j["count"], 3);
}

TEST(TokenizeTool, DecodeAcceptsJsonOutputOfEncode) {
  const std::string ids = WriteTemp("ids.json", "{\"ids\":[12092,1533],\"count\":2}\n");
  TokenizeOptions o;
  o.tokenizer_path = kTokenizerJson;
  o.ids_path = ids;
  const Result r = RunTool(o);
  std::remove(ids.c_str());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "Hello world");
}

TEST(TokenizeTool, ErrorsGoToStderrWithExitOne) {
  TokenizeOptions o;
  o.tokenizer_path = kTokenizerJson;
  o.text_path = "/nonexistent/kvgrid/input.txt";
  Result r = RunTool(o);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("/nonexistent/kvgrid/input.txt"), std::string::npos) << r.err;

  const std::string text = WriteTemp("x.txt", "x");
  o.tokenizer_path = "/nonexistent/tokenizer.json";
  o.text_path = text;
  r = RunTool(o);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/nonexistent/tokenizer.json"), std::string::npos) << r.err;

  const std::string bad_ids = WriteTemp("bad_ids.txt", "12 abc 7");
  o.tokenizer_path = kTokenizerJson;
  o.text_path = bad_ids;
  o.decode = true;
  r = RunTool(o);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("abc"), std::string::npos) << r.err;

  const std::string oov = WriteTemp("oov.txt", "12 99999");
  o.text_path = oov;
  r = RunTool(o);
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("99999"), std::string::npos) << r.err;
  std::remove(text.c_str());
  std::remove(bad_ids.c_str());
  std::remove(oov.c_str());
}

TEST(TokenizeTool, UsageErrors) {
  TokenizeOptions o;
  o.tokenizer_path = kTokenizerJson;
  EXPECT_EQ(RunTool(o).code, 2);  // no input
  o.text_path = "a";
  o.ids_path = "b";
  EXPECT_EQ(RunTool(o).code, 2);  // both inputs
}

TEST(ParseIdList, Forms) {
  auto a = ParseIdList(" 1 2\n3\t4 ", "f");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, std::vector<int32_t>({1, 2, 3, 4}));
  auto b = ParseIdList("[5, 6,7]", "f");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, std::vector<int32_t>({5, 6, 7}));
  auto c = ParseIdList("", "f");
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->empty());
  auto d = ParseIdList("1 2.5", "ids.txt");
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("ids.txt"), std::string::npos);
  EXPECT_NE(d.status().message().find("2.5"), std::string::npos);
  EXPECT_FALSE(ParseIdList("99999999999", "f").ok());
  EXPECT_EQ(FormatIdList({1, 2, 3}), "1 2 3");
  EXPECT_EQ(FormatIdsJson({}), "{\"ids\":[],\"count\":0}");
}

}  // namespace
}  // namespace kvgrid
