// Torch-free checkpoint readers: the restricted unpickler and torch.save zips (pytorch_model.bin),
// hostile and malformed files (tests/fixtures/checkpoints/make_checkpoints.py), shard indexes and
// the order a folder's weight files are preferred in.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "model/checkpoint/checkpoint.h"
#include "model/checkpoint/state_dict_pickle.h"
#include "model/checkpoint/torch_zip_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace kvgrid {
namespace {

namespace fs = std::filesystem;
const std::string kFixtures = KVGRID_FIXTURES_DIR;
const std::string kBad = kFixtures + "/checkpoints/";
const std::string kBinModel = kFixtures + "/models/tiny-neox-sequential-bin";
constexpr const char* kPayloadMarker = "/tmp/kvgrid-pickle-payload-ran";

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void WriteBytes(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

std::string TempDir(const std::string& name) {
  std::string d = (fs::temp_directory_path() / ("kvgrid-ckpt-" + name + "-" + std::to_string(::getpid()))).string();
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string ErrorOf(const std::string& path) {
  auto f = TorchZipFile::Open(path);
  EXPECT_FALSE(f.ok()) << path << " opened";
  return f.ok() ? "" : std::string(f.status().message());
}

TEST(TorchZip, ReadsTheFixtureStateDict) {
  auto f = TorchZipFile::Open(kBinModel + "/pytorch_model.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().size(), 49u);
  const PickledTensor* embed = (*f)->Find("gpt_neox.embed_in.weight");
  ASSERT_NE(embed, nullptr);
  EXPECT_EQ(embed->dtype, StDtype::kF16);
  EXPECT_EQ(embed->shape, (std::vector<int64_t>{1000, 48}));
  EXPECT_EQ(embed->strides, (std::vector<int64_t>{48, 1}));
  EXPECT_EQ(embed->storage_numel, 48000);
  const PickledTensor* bias = (*f)->Find("gpt_neox.layers.0.attention.bias");
  ASSERT_NE(bias, nullptr);
  EXPECT_EQ(bias->dtype, StDtype::kBool);
  EXPECT_EQ(bias->shape, (std::vector<int64_t>{1, 1, 512, 512}));
  // A storage read gives the bytes torch.save wrote (the bool mask is lower-triangular).
  std::vector<uint8_t> mask(TorchZipFile::StorageBytes(*bias));
  ASSERT_TRUE((*f)->ReadStorage(*bias, mask.data()).ok());
  EXPECT_EQ(mask[0], 1);
  EXPECT_EQ(mask[1], 0);
  EXPECT_EQ(mask[512 + 1], 1);
}

TEST(TorchZip, GoodTinyFileMatchesWhatWasWritten) {
  auto f = TorchZipFile::Open(kBad + "good.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 1u);
  const PickledTensor& w = (*f)->tensors()[0];
  EXPECT_EQ(w.name, "w");
  EXPECT_EQ(w.storage_key, "0");
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  uint16_t halves[6];
  ASSERT_TRUE((*f)->ReadStorage(w, halves).ok());
  EXPECT_EQ(halves[0], 0x3c00);  // 1.0 in float16
  EXPECT_EQ(halves[5], 0x4600);  // 6.0
}

TEST(TorchZip, PicklesThatCallSomethingAreRefusedAndNeverRun) {
  ::unlink(kPayloadMarker);
  std::string e = ErrorOf(kBad + "os_system.bin");
  EXPECT_NE(e.find("os_system.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("'posix.system'"), std::string::npos) << e;
  EXPECT_NE(e.find("refused"), std::string::npos) << e;
  e = ErrorOf(kBad + "builtins_eval.bin");  // protocol 4: STACK_GLOBAL
  EXPECT_NE(e.find("'builtins.eval'"), std::string::npos) << e;
  e = ErrorOf(kBad + "not_a_tensor_global.bin");
  EXPECT_NE(e.find("'numpy.core.multiarray._reconstruct'"), std::string::npos) << e;
  e = ErrorOf(kBad + "inst_opcode.bin");
  EXPECT_NE(e.find("opcode 0x69"), std::string::npos) << e;
  struct stat st;
  EXPECT_NE(::stat(kPayloadMarker, &st), 0) << "a pickle payload ran: " << kPayloadMarker << " exists";
}

TEST(TorchZip, MalformedFilesAreClearErrors) {
  std::string e = ErrorOf(kBad + "wrong_storage_size.bin");
  EXPECT_NE(e.find("archive/data/0 holds 10 bytes"), std::string::npos) << e;
  e = ErrorOf(kBad + "view_past_storage.bin");
  EXPECT_NE(e.find("reaches past its storage 0"), std::string::npos) << e;
  e = ErrorOf(kBad + "nested_dict.bin");
  EXPECT_NE(e.find("maps a str to a dict"), std::string::npos) << e;
  e = ErrorOf(kBad + "big_endian.bin");
  EXPECT_NE(e.find("'big' byte order"), std::string::npos) << e;
  e = ErrorOf(kBad + "legacy.bin");
  EXPECT_NE(e.find("legacy torch.save format"), std::string::npos) << e;
  e = ErrorOf(kBad + "no_data_pkl.bin");
  EXPECT_NE(e.find("without <name>/data.pkl"), std::string::npos) << e;
  e = ErrorOf(kBad + "does-not-exist.bin");
  EXPECT_NE(e.find("cannot open"), std::string::npos) << e;
}

TEST(TorchZip, TruncatedAndDamagedZipsAreErrors) {
  const std::string good = ReadBytes(kBinModel + "/pytorch_model.bin");
  const std::string dir = TempDir("damaged");
  for (size_t keep : {size_t{3}, size_t{100}, good.size() / 2, good.size() - 10}) {
    WriteBytes(dir + "/pytorch_model.bin", good.substr(0, keep));
    std::string e = ErrorOf(dir + "/pytorch_model.bin");
    EXPECT_NE(e.find(dir + "/pytorch_model.bin"), std::string::npos) << keep << ": " << e;
  }
  // A flipped byte inside a storage opens (the directory is intact) and fails its CRC on read.
  std::string flipped = good;
  flipped[50000] ^= 0x5a;  // inside pytorch_model/data/0 (bytes ~5.6k-101k)
  WriteBytes(dir + "/pytorch_model.bin", flipped);
  auto f = TorchZipFile::Open(dir + "/pytorch_model.bin");
  ASSERT_TRUE(f.ok()) << f.status();
  const PickledTensor* t = (*f)->Find("embed_out.weight");
  ASSERT_NE(t, nullptr);
  std::vector<char> buf(TorchZipFile::StorageBytes(*t));
  auto s = (*f)->ReadStorage(*t, buf.data());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("damaged"), std::string::npos) << s;
  fs::remove_all(dir);
}

TEST(StateDictPickle, LimitsNestingMemoAndProtocol) {
  auto deep = ParseStateDictPickle(ReadBytes(std::string(KVGRID_SOURCE_DIR) +
                                             "/tests/engine/state_dict_pickle-corpus/deep-tuples.pkl"), "x.bin");
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("nested too deeply"), std::string::npos) << deep.status();
  auto proto0 = ParseStateDictPickle(std::string("\x80\x01N.", 4), "x.bin");
  EXPECT_FALSE(proto0.ok());
  auto undefined_memo = ParseStateDictPickle(std::string("\x80\x02h\x07.", 5), "x.bin");
  ASSERT_FALSE(undefined_memo.ok());
  EXPECT_NE(undefined_memo.status().message().find("memo entry 7"), std::string::npos);
  auto no_stop = ParseStateDictPickle(std::string("\x80\x02}", 3), "x.bin");
  ASSERT_FALSE(no_stop.ok());
  EXPECT_NE(no_stop.status().message().find("truncated"), std::string::npos);
  auto empty_dict = ParseStateDictPickle(std::string("\x80\x02}.", 4), "x.bin");
  ASSERT_TRUE(empty_dict.ok());
  EXPECT_TRUE(empty_dict->empty());
}

TEST(StateDictPickleFuzzCorpus, ReplaysWithoutCrashing) {
  int files = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(KVGRID_SOURCE_DIR) / "tests" / "engine" /
                                                  "state_dict_pickle-corpus")) {
    std::string data = ReadBytes(entry.path());
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    ++files;
  }
  EXPECT_GE(files, 10);
}

TEST(ShardIndex, ListsEachShardOnceAndRefusesPaths) {
  auto files = ParseShardIndex(R"({"metadata":{"total_size":10},"weight_map":{"a":"m-1.bin","b":"m-2.bin","c":"m-1.bin"}})",
                               "idx.json");
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_EQ(*files, (std::vector<std::string>{"m-1.bin", "m-2.bin"}));
  for (const char* bad : {R"({"weight_map":{"a":"../etc/passwd"}})", R"({"weight_map":{"a":"/abs.bin"}})",
                          R"({"weight_map":{}})", R"({"weight_map":[1]})", "not json"}) {
    auto r = ParseShardIndex(bad, "idx.json");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("idx.json"), std::string::npos);
  }
}

TEST(Checkpoint, PrefersSafetensorsThenFallsBackToTheBinAndShards) {
  // safetensors preferred over the .bin when a folder has both.
  const std::string both = TempDir("both");
  fs::copy_file(kFixtures + "/models/tiny-neox-sequential/model.safetensors", both + "/model.safetensors");
  fs::copy_file(kBinModel + "/pytorch_model.bin", both + "/pytorch_model.bin");
  auto c = Checkpoint::Open(both);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->source(), both + "/model.safetensors");
  ASSERT_NE((*c)->Find("embed_out.weight"), nullptr);
  EXPECT_NE((*c)->Find("embed_out.weight")->safetensors, nullptr);
  // Only the .bin: read from it, with the buffers real Pythia .bin files carry.
  c = Checkpoint::Open(kBinModel);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ((*c)->source(), kBinModel + "/pytorch_model.bin");
  ASSERT_NE((*c)->Find("gpt_neox.layers.1.attention.rotary_emb.inv_freq"), nullptr);
  EXPECT_NE((*c)->Find("embed_out.weight")->torch_zip, nullptr);
  // Shards: two .bin shards named by an index; a missing shard is named.
  const std::string sharded = TempDir("sharded");
  fs::copy_file(kBinModel + "/pytorch_model.bin", sharded + "/pytorch_model-00001-of-00002.bin");
  fs::copy_file(kBad + "good.bin", sharded + "/pytorch_model-00002-of-00002.bin");
  WriteBytes(sharded + "/pytorch_model.bin.index.json",
             R"({"weight_map":{"embed_out.weight":"pytorch_model-00001-of-00002.bin","w":"pytorch_model-00002-of-00002.bin"}})");
  c = Checkpoint::Open(sharded);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_NE((*c)->Find("embed_out.weight"), nullptr);
  ASSERT_NE((*c)->Find("w"), nullptr);
  EXPECT_EQ((*c)->Find("w")->file(), sharded + "/pytorch_model-00002-of-00002.bin");
  fs::remove(sharded + "/pytorch_model-00002-of-00002.bin");
  c = Checkpoint::Open(sharded);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("names shard pytorch_model-00002-of-00002.bin"), std::string::npos) << c.status();
  // Nothing at all: the error lists what was looked for.
  const std::string empty = TempDir("empty");
  c = Checkpoint::Open(empty);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("pytorch_model.bin.index.json"), std::string::npos) << c.status();
  for (const auto& d : {both, sharded, empty}) fs::remove_all(d);
}

}  // namespace
}  // namespace kvgrid
