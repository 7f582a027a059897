// A restricted unpickler for the `data.pkl` of a torch.save zip checkpoint (pytorch_model.bin):
// it understands exactly what a state dict needs and nothing else, so a malicious pickle cannot run
// anything. No torch.
//
// Accepted: pickle protocols 2-5 with the opcodes that build tuples, lists, dicts, strings, numbers
// and booleans; the globals collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter and the typed storage classes (torch.HalfStorage, ...); persistent
// ids ('storage', <storage class>, key, location, numel). Every other global, and every opcode that
// could call something (INST, OBJ, NEWOBJ, EXT*), is refused with an error naming `source` and
// the global or opcode: nothing is called, ever — "calling" an allowed global only builds a
// description (a dict, a tensor reference).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/checkpoint/safetensors.h"

namespace kvgrid {

// One tensor of a pickled state dict: a strided view of a storage (a member `data/<key>` of the
// zip). Offsets, sizes and strides are in elements; the view lies inside the storage.
struct PickledTensor {
  std::string name;
  std::string storage_key;
  StDtype dtype = StDtype::kF32;
  int64_t storage_numel = 0;
  int64_t storage_offset = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
};

// Parses `pickle` (the bytes of data.pkl) into the tensors of a flat state dict, in pickle order.
// Errors (InvalidArgument, PermissionDenied for forbidden globals) name `source`.
absl::StatusOr<std::vector<PickledTensor>> ParseStateDictPickle(std::string_view pickle,
                                                                 const std::string& source);

}  // namespace kvgrid
