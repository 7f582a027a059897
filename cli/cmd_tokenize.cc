// `kvgrid tokenize`: text -> GPT-NeoX token ids (or ids -> text with --decode), Hugging Face ids.
#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>

#include "cli/command_registry.h"
#include "model/tokenizer/tokenize_tool.h"

namespace kvgrid::cli {
namespace {

std::function<int()> SetupTokenize(CLI::App& app) {
  auto opts = std::make_shared<TokenizeOptions>();
  CLI::App* sub = app.add_subcommand(
      "tokenize", "Encode a text file to token ids with a tokenizer.json, or decode ids to text");
  sub->add_option("--tokenizer", opts->tokenizer_path, "tokenizer.json (Hugging Face format)")
      ->required();
  sub->add_option("--text", opts->text_path,
                  "file to encode (with --decode: whitespace-separated ids); '-' = stdin");
  sub->add_option("--ids", opts->ids_path, "file of whitespace-separated ids to decode; '-' = stdin");
  sub->add_flag("--decode", opts->decode, "decode ids to text instead of encoding");
  sub->add_flag("--json", opts->json,
                "JSON output: {\"ids\":[...],\"count\":N} (decode: {\"text\":...,\"count\":N})");
  return [opts]() { return RunTokenize(*opts, std::cout, std::cerr); };
}

}  // namespace

KVGRID_REGISTER_COMMAND(tokenize, "tokenize", SetupTokenize);

}  // namespace kvgrid::cli
