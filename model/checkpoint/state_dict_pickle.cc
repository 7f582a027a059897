#include "model/checkpoint/state_dict_pickle.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <set>
#include <unordered_map>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace kvgrid {
namespace {

constexpr size_t kMaxStack = size_t{1} << 20;
constexpr size_t kMaxMemo = size_t{1} << 20;
constexpr size_t kMaxValues = size_t{1} << 20;  // a 12B-parameter state dict needs ~20k
constexpr int kMaxDepth = 64;  // nesting of containers (a state dict needs 4)
constexpr size_t kMaxDims = 16;

enum class Kind { kNone, kBool, kInt, kFloat, kString, kBytes, kTuple, kList, kDict, kGlobal, kStorage, kTensor };

// Values live in the unpickler's arena and point at each other with plain pointers: a pickle can
// make a container hold itself (through the memo), which reference counting would leak.
struct Value;
using ValuePtr = Value*;

struct Value {
  Kind kind = Kind::kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;                // string, bytes; kGlobal: "module.name"; kStorage: key
  std::vector<ValuePtr> items;  // tuple, list; dict as key, value, key, value, ...
  int depth = 0;                // container nesting below this value
  StDtype dtype = StDtype::kF32;  // kStorage
  std::unique_ptr<PickledTensor> tensor;  // kTensor (name empty)
};

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kBytes: return "bytes";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kGlobal: return "global";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

// The storage classes torch.save names, and their element types.
bool StorageDtype(const std::string& name, StDtype* out) {
  static const std::pair<const char*, StDtype> kStorages[] = {
      {"HalfStorage", StDtype::kF16},  {"FloatStorage", StDtype::kF32}, {"BFloat16Storage", StDtype::kBF16},
      {"DoubleStorage", StDtype::kF64}, {"LongStorage", StDtype::kI64}, {"IntStorage", StDtype::kI32},
      {"ShortStorage", StDtype::kI16}, {"CharStorage", StDtype::kI8},  {"ByteStorage", StDtype::kU8},
      {"BoolStorage", StDtype::kBool}};
  for (const auto& [n, d] : kStorages) {
    if (name == n) {
      *out = d;
      return true;
    }
  }
  return false;
}

class Unpickler {
 public:
  Unpickler(std::string_view in, const std::string& source) : in_(in), source_(source) {}

  absl::StatusOr<ValuePtr> Run() {
    while (true) {
      op_pos_ = pos_;
      if (pos_ >= in_.size()) return Error("ends without STOP (truncated)");
      const uint8_t op = static_cast<uint8_t>(in_[pos_++]);
      if (op == '.') {  // STOP
        if (stack_.size() != 1 || !marks_.empty()) return Error("STOP with a malformed stack");
        return stack_.back();
      }
      RETURN_IF_ERROR(Step(op));
      if (stack_.size() > kMaxStack) return Error("stack too deep");
      if (arena_.size() > kMaxValues) return Error("too many objects for a state dict");
    }
  }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": data.pkl is not a state dict kvgrid can read (byte ", op_pos_, "): ", what));
  }

  absl::Status Need(uint64_t n) const {
    if (n > in_.size() - pos_) return Error("truncated");
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> ReadUnsigned(int bytes) {
    RETURN_IF_ERROR(Need(bytes));
    uint64_t v = 0;
    for (int b = 0; b < bytes; ++b) v |= uint64_t{static_cast<uint8_t>(in_[pos_ + b])} << (8 * b);
    pos_ += bytes;
    return v;
  }
  absl::StatusOr<std::string> ReadBytes(uint64_t n) {
    RETURN_IF_ERROR(Need(n));
    std::string s(in_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  absl::StatusOr<std::string> ReadLine() {
    size_t end = in_.find('\n', pos_);
    if (end == std::string_view::npos || end - pos_ > 256) return Error("GLOBAL without a short line");
    std::string s(in_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }

  ValuePtr Make(Kind k) {
    arena_.push_back(std::make_unique<Value>());
    Value* v = arena_.back().get();
    v->kind = k;
    return v;
  }
  ValuePtr Int(int64_t i) {
    auto v = Make(Kind::kInt);
    v->i = i;
    return v;
  }
  ValuePtr Str(Kind k, std::string s) {
    auto v = Make(k);
    v->s = std::move(s);
    return v;
  }
  absl::Status Push(ValuePtr v) {
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }
  absl::StatusOr<ValuePtr> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Error("stack underflow");
    ValuePtr v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<ValuePtr> Top() const {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Error("stack underflow");
    return stack_.back();
  }
  absl::StatusOr<std::vector<ValuePtr>> PopToMark() {
    if (marks_.empty()) return Error("no MARK");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<ValuePtr> items(std::make_move_iterator(stack_.begin() + m), std::make_move_iterator(stack_.end()));
    stack_.resize(m);
    return items;
  }
  // Adds `child` to container `v`, keeping the nesting bounded (a state dict nests 4 deep).
  absl::Status Adopt(Value& v, ValuePtr child) {
    v.depth = std::max(v.depth, child->depth + 1);
    if (v.depth > kMaxDepth) return Error("containers nested too deeply");
    v.items.push_back(std::move(child));
    return absl::OkStatus();
  }
  absl::StatusOr<ValuePtr> Container(Kind k, std::vector<ValuePtr> items) {
    auto v = Make(k);
    for (auto& c : items) RETURN_IF_ERROR(Adopt(*v, std::move(c)));
    return v;
  }
  absl::Status Memo(uint64_t index) {
    ASSIGN_OR_RETURN(ValuePtr top, Top());
    if (memo_.size() >= kMaxMemo && !memo_.count(index)) return Error("memo too large");
    memo_[index] = top;
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) return Error(absl::StrCat("memo entry ", index, " is not defined"));
    return Push(it->second);
  }

  absl::Status Global(const std::string& module, const std::string& name) {
    const std::string full = absl::StrCat(module, ".", name);
    StDtype unused;
    const bool allowed = (module == "collections" && name == "OrderedDict") ||
                         (module == "torch._utils" &&
                          (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter")) ||
                         (module == "torch" && StorageDtype(name, &unused));
    if (!allowed) {
      return absl::PermissionDeniedError(absl::StrCat(
          source_, ": data.pkl names the Python global '", absl::CHexEscape(full),
          "', which a state dict of tensors never needs; refused without running anything (kvgrid "
          "accepts only collections.OrderedDict, torch._utils._rebuild_tensor_v2/_rebuild_parameter "
          "and torch storage classes). If the file is yours, convert it to model.safetensors."));
    }
    return Push(Str(Kind::kGlobal, full));
  }

  absl::Status PersistentId() {
    ASSIGN_OR_RETURN(ValuePtr pid, Pop());
    const auto& t = pid->items;
    if (pid->kind != Kind::kTuple || t.size() != 5 || t[0]->kind != Kind::kString || t[0]->s != "storage" ||
        t[1]->kind != Kind::kGlobal || t[2]->kind != Kind::kString || t[3]->kind != Kind::kString ||
        t[4]->kind != Kind::kInt) {
      return Error("a persistent id that is not ('storage', <storage class>, key, location, numel)");
    }
    StDtype dtype;
    if (!StorageDtype(t[1]->s.substr(t[1]->s.rfind('.') + 1), &dtype) || t[1]->s.rfind("torch.", 0) != 0) {
      return Error(absl::StrCat("persistent id names ", t[1]->s, ", not a storage class"));
    }
    const std::string& key = t[2]->s;
    if (key.empty() || key.size() > 64) return Error("storage key empty or too long");
    for (char c : key) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) {
        return Error(absl::StrCat("storage key '", absl::CHexEscape(key), "' is not a plain name"));
      }
    }
    const int64_t numel = t[4]->i;
    if (numel < 0 || numel > (int64_t{1} << 40)) return Error(absl::StrCat("storage ", key, " has ", numel, " elements"));
    auto [it, inserted] = storages_.emplace(key, std::make_pair(dtype, numel));
    if (!inserted && (it->second.first != dtype || it->second.second != numel)) {
      return Error(absl::StrCat("storage ", key, " is named with two different types or sizes"));
    }
    auto v = Str(Kind::kStorage, key);
    v->dtype = dtype;
    v->i = numel;
    return Push(v);
  }

  absl::StatusOr<std::vector<int64_t>> IntTuple(const ValuePtr& v, const char* what) const {
    if (v->kind != Kind::kTuple || v->items.size() > kMaxDims) {
      return Error(absl::StrCat("tensor ", what, " is not a tuple of at most ", kMaxDims, " ints"));
    }
    std::vector<int64_t> out;
    for (const auto& x : v->items) {
      if (x->kind != Kind::kInt || x->i < 0) return Error(absl::StrCat("tensor ", what, " holds a non-int or a negative value"));
      out.push_back(x->i);
    }
    return out;
  }

  absl::StatusOr<ValuePtr> RebuildTensor(const std::vector<ValuePtr>& a) {
    if (a.size() != 6 && a.size() != 7) return Error("_rebuild_tensor_v2 called with the wrong arguments");
    if (a[0]->kind != Kind::kStorage || a[1]->kind != Kind::kInt || a[4]->kind != Kind::kBool) {
      return Error("_rebuild_tensor_v2 called with the wrong argument types");
    }
    auto v = Make(Kind::kTensor);
    v->tensor = std::make_unique<PickledTensor>();
    PickledTensor& t = *v->tensor;
    t.storage_key = a[0]->s;
    t.dtype = a[0]->dtype;
    t.storage_numel = a[0]->i;
    t.storage_offset = a[1]->i;
    ASSIGN_OR_RETURN(t.shape, IntTuple(a[2], "size"));
    ASSIGN_OR_RETURN(t.strides, IntTuple(a[3], "stride"));
    if (t.shape.size() != t.strides.size()) return Error("tensor size and stride differ in length");
    if (t.storage_offset < 0) return Error("negative storage offset");
    // The view must lie inside its storage: offset + sum((size - 1) * stride) < numel.
    unsigned __int128 last = static_cast<unsigned __int128>(t.storage_offset);
    bool empty = false;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (t.shape[d] == 0) empty = true;
      else last += static_cast<unsigned __int128>(t.shape[d] - 1) * static_cast<unsigned __int128>(t.strides[d]);
    }
    if (!empty && last >= static_cast<unsigned __int128>(t.storage_numel)) {
      return Error(absl::StrCat("a tensor view reaches past its storage ", t.storage_key, " (",
                                t.storage_numel, " elements)"));
    }
    return v;
  }

  absl::Status Reduce() {
    ASSIGN_OR_RETURN(ValuePtr args, Pop());
    ASSIGN_OR_RETURN(ValuePtr fn, Pop());
    if (fn->kind != Kind::kGlobal || args->kind != Kind::kTuple) return Error("REDUCE of a non-callable");
    if (fn->s == "collections.OrderedDict") {
      if (!args->items.empty()) return Error("OrderedDict called with arguments");
      return Push(Make(Kind::kDict));
    }
    if (fn->s == "torch._utils._rebuild_tensor_v2") {
      ASSIGN_OR_RETURN(ValuePtr t, RebuildTensor(args->items));
      return Push(t);
    }
    if (fn->s == "torch._utils._rebuild_parameter") {
      if (args->items.size() != 3 || args->items[0]->kind != Kind::kTensor) {
        return Error("_rebuild_parameter called with the wrong arguments");
      }
      return Push(args->items[0]);
    }
    return Error(absl::StrCat(fn->s, " cannot be called"));
  }

  absl::Status SetItems(std::vector<ValuePtr> kv) {
    if (kv.size() % 2 != 0) return Error("SETITEMS with an odd number of items");
    ASSIGN_OR_RETURN(ValuePtr d, Top());
    if (d->kind != Kind::kDict) return Error(absl::StrCat("SETITEM on a ", KindName(d->kind)));
    for (auto& x : kv) RETURN_IF_ERROR(Adopt(*d, std::move(x)));
    return absl::OkStatus();
  }

  absl::Status Append(std::vector<ValuePtr> xs) {
    ASSIGN_OR_RETURN(ValuePtr l, Top());
    if (l->kind != Kind::kList) return Error(absl::StrCat("APPEND to a ", KindName(l->kind)));
    for (auto& x : xs) RETURN_IF_ERROR(Adopt(*l, std::move(x)));
    return absl::OkStatus();
  }

  absl::Status Step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        ASSIGN_OR_RETURN(uint64_t p, ReadUnsigned(1));
        if (p < 2 || p > 5) return Error(absl::StrCat("pickle protocol ", p, " (2-5 supported)"));
        return absl::OkStatus();
      }
      case 0x95: return ReadUnsigned(8).status();  // FRAME: a hint only
      case '(': marks_.push_back(stack_.size()); return absl::OkStatus();  // MARK
      case ')': return Push(Make(Kind::kTuple));  // EMPTY_TUPLE
      case 't': {  // TUPLE
        ASSIGN_OR_RETURN(auto items, PopToMark());
        ASSIGN_OR_RETURN(ValuePtr v, Container(Kind::kTuple, std::move(items)));
        return Push(v);
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        std::vector<ValuePtr> items(op - 0x84);
        for (size_t k = items.size(); k-- > 0;) {
          ASSIGN_OR_RETURN(items[k], Pop());
        }
        ASSIGN_OR_RETURN(ValuePtr v, Container(Kind::kTuple, std::move(items)));
        return Push(v);
      }
      case ']': return Push(Make(Kind::kList));  // EMPTY_LIST
      case '}': return Push(Make(Kind::kDict));  // EMPTY_DICT
      case 'a': {  // APPEND
        ASSIGN_OR_RETURN(ValuePtr x, Pop());
        return Append({x});
      }
      case 'e': {  // APPENDS
        ASSIGN_OR_RETURN(auto xs, PopToMark());
        return Append(std::move(xs));
      }
      case 's': {  // SETITEM
        ASSIGN_OR_RETURN(ValuePtr v, Pop());
        ASSIGN_OR_RETURN(ValuePtr k, Pop());
        return SetItems({k, v});
      }
      case 'u': {  // SETITEMS
        ASSIGN_OR_RETURN(auto kv, PopToMark());
        return SetItems(std::move(kv));
      }
      case 'N': return Push(Make(Kind::kNone));
      case 0x88: case 0x89: {  // NEWTRUE, NEWFALSE
        auto v = Make(Kind::kBool);
        v->i = op == 0x88;
        return Push(v);
      }
      case 'K': { ASSIGN_OR_RETURN(uint64_t v, ReadUnsigned(1)); return Push(Int(static_cast<int64_t>(v))); }
      case 'M': { ASSIGN_OR_RETURN(uint64_t v, ReadUnsigned(2)); return Push(Int(static_cast<int64_t>(v))); }
      case 'J': {
        ASSIGN_OR_RETURN(uint64_t v, ReadUnsigned(4));
        return Push(Int(static_cast<int32_t>(static_cast<uint32_t>(v))));
      }
      case 0x8a: {  // LONG1: n little-endian two's-complement bytes
        ASSIGN_OR_RETURN(uint64_t n, ReadUnsigned(1));
        if (n > 8) return Error("integer wider than 64 bits");
        if (n == 0) return Push(Int(0));
        ASSIGN_OR_RETURN(uint64_t v, ReadUnsigned(static_cast<int>(n)));
        if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        return Push(Int(static_cast<int64_t>(v)));
      }
      case 'G': {  // BINFLOAT, big-endian
        RETURN_IF_ERROR(Need(8));
        uint64_t bits = 0;
        for (int b = 0; b < 8; ++b) bits = (bits << 8) | static_cast<uint8_t>(in_[pos_ + b]);
        pos_ += 8;
        auto v = Make(Kind::kFloat);
        std::memcpy(&v->f, &bits, 8);
        return Push(v);
      }
      case 'X': case 0x8c: case 0x8d: case 'U': case 'T': case 'C': case 'B': case 0x8e: {
        const int width = (op == 0x8c || op == 'U' || op == 'C') ? 1 : (op == 0x8d || op == 0x8e) ? 8 : 4;
        ASSIGN_OR_RETURN(uint64_t n, ReadUnsigned(width));
        if (op == 'T' && n > 0x7fffffffu) return Error("negative string length");
        ASSIGN_OR_RETURN(std::string s, ReadBytes(n));
        const bool bytes = op == 'C' || op == 'B' || op == 0x8e;
        return Push(Str(bytes ? Kind::kBytes : Kind::kString, std::move(s)));
      }
      case 'q': { ASSIGN_OR_RETURN(uint64_t i, ReadUnsigned(1)); return Memo(i); }  // BINPUT
      case 'r': { ASSIGN_OR_RETURN(uint64_t i, ReadUnsigned(4)); return Memo(i); }  // LONG_BINPUT
      case 0x94: return Memo(memo_.size());                                       // MEMOIZE
      case 'h': { ASSIGN_OR_RETURN(uint64_t i, ReadUnsigned(1)); return Get(i); }   // BINGET
      case 'j': { ASSIGN_OR_RETURN(uint64_t i, ReadUnsigned(4)); return Get(i); }   // LONG_BINGET
      case '0': return Pop().status();                                             // POP
      case '1': return PopToMark().status();                                       // POP_MARK
      case '2': { ASSIGN_OR_RETURN(ValuePtr v, Top()); return Push(v); }          // DUP
      case 'c': {  // GLOBAL
        ASSIGN_OR_RETURN(std::string module, ReadLine());
        ASSIGN_OR_RETURN(std::string name, ReadLine());
        return Global(module, name);
      }
      case 0x93: {  // STACK_GLOBAL
        ASSIGN_OR_RETURN(ValuePtr name, Pop());
        ASSIGN_OR_RETURN(ValuePtr module, Pop());
        if (name->kind != Kind::kString || module->kind != Kind::kString) return Error("STACK_GLOBAL of non-strings");
        return Global(module->s, name->s);
      }
      case 'R': return Reduce();
      case 'Q': return PersistentId();  // BINPERSID
      case 'b': {  // BUILD: an OrderedDict's attributes (a state dict's _metadata): ignored
        ASSIGN_OR_RETURN(ValuePtr state, Pop());
        ASSIGN_OR_RETURN(ValuePtr target, Top());
        if (target->kind != Kind::kDict && target->kind != Kind::kTensor) {
          return Error(absl::StrCat("BUILD on a ", KindName(target->kind)));
        }
        return absl::OkStatus();
      }
      default:
        return Error(absl::StrFormat("opcode 0x%02x is not allowed in a state dict", op));
    }
  }

  std::string_view in_;
  const std::string& source_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::vector<ValuePtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, ValuePtr> memo_;
  std::unordered_map<std::string, std::pair<StDtype, int64_t>> storages_;
  std::vector<std::unique_ptr<Value>> arena_;
};

}  // namespace

absl::StatusOr<std::vector<PickledTensor>> ParseStateDictPickle(std::string_view pickle,
                                                                 const std::string& source) {
  Unpickler u(pickle, source);
  ASSIGN_OR_RETURN(ValuePtr root, u.Run());
  if (root->kind != Kind::kDict) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": data.pkl holds a ", KindName(root->kind), ", not a state dict (a dict of tensors)"));
  }
  std::vector<PickledTensor> out;
  std::set<std::string> names;
  for (size_t k = 0; k + 1 < root->items.size(); k += 2) {
    const Value& key = *root->items[k];
    const Value& val = *root->items[k + 1];
    if (key.kind != Kind::kString || val.kind != Kind::kTensor) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": data.pkl maps a ", KindName(key.kind), " to a ", KindName(val.kind),
          "; a state dict maps names to tensors (a training checkpoint holding a state dict is not a model file)"));
    }
    if (!names.insert(key.s).second) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": data.pkl names tensor '", key.s, "' twice"));
    }
    out.push_back(*val.tensor);
    out.back().name = key.s;
  }
  return out;
}

}  // namespace kvgrid
