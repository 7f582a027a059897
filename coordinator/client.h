// A client of the Coordinator service for the CLI commands (submit, status, cancel, results).
// Finds the coordinator with --coordinator ADDR (default $KVGRID_COORDINATOR, else
// 127.0.0.1:50051) and the token with --token-file F (default $KVGRID_TOKEN_FILE, else
// $KVGRID_TOKEN); TLS with --tls-ca F (default $KVGRID_TLS_CA).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "proto/kvgrid.grpc.pb.h"
#include "proto/rpc_common.h"

namespace kvgrid {

struct ClientOptions {
  std::string address;
  std::string token;          // "" sends no token (the coordinator then refuses the call)
  rpc::ClientSecurity security;
  int64_t timeout_ms = 30000;
  bool wait_for_ready = false;  // true: calls wait (up to timeout_ms) for the coordinator to be up
};

// Applies the environment defaults to the command-line flags ("" = flag not given).
absl::StatusOr<ClientOptions> ResolveClientOptions(const std::string& address_flag,
                                                   const std::string& token_file_flag,
                                                   const std::string& tls_ca_flag);

// The connection flags every client command takes.
struct ClientFlags {
  std::string coordinator;  // --coordinator ADDR
  std::string token_file;   // --token-file F
  std::string tls_ca;       // --tls-ca F
};

// Adds --coordinator, --token-file and --tls-ca to a CLI11 subcommand (templated so this header
// does not need CLI11).
template <typename App>
void AddClientFlags(App* cmd, ClientFlags* flags) {
  cmd->add_option("--coordinator", flags->coordinator,
                  "coordinator address (default $KVGRID_COORDINATOR, else 127.0.0.1:50051)");
  cmd->add_option("--token-file", flags->token_file,
                  "bearer token file (default $KVGRID_TOKEN_FILE, else $KVGRID_TOKEN)");
  cmd->add_option("--tls-ca", flags->tls_ca,
                  "PEM CA certificate: connect with TLS (default $KVGRID_TLS_CA)");
}

class CoordinatorClient {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(const ClientOptions& options);
  static absl::StatusOr<std::unique_ptr<CoordinatorClient>> Connect(const ClientFlags& flags);

  absl::StatusOr<v1::SubmitResponse> Submit(const std::string& grid_yaml,
                                            const std::string& filename, bool force);
  absl::StatusOr<v1::StatusResponse> Status(const std::string& experiment);
  absl::StatusOr<v1::CancelResponse> Cancel(const std::string& experiment);
  absl::StatusOr<v1::ResultsResponse> Results(const std::string& experiment,
                                              bool include_samples);

  const std::string& address() const { return options_.address; }

 private:
  explicit CoordinatorClient(ClientOptions options) : options_(std::move(options)) {}
  void Prepare(grpc::ClientContext* ctx) const;
  std::string What(const char* method) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
};

}  // namespace kvgrid
