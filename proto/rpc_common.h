// Shared gRPC plumbing for kvgrid clients, workers and the coordinator: bearer tokens, channel and
// server credentials (TLS when configured), address defaults and absl <-> gRPC status mapping.
// No torch, no SQLite.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvgrid::rpc {

inline constexpr char kDefaultCoordinatorAddress[] = "127.0.0.1:50051";
inline constexpr char kAuthMetadataKey[] = "authorization";

// Reads a token file: surrounding whitespace stripped; empty files and unreadable paths are errors
// naming the path.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The token a process presents/expects: `token_file` if non-empty, else the file named by
// $KVGRID_TOKEN_FILE, else the value of $KVGRID_TOKEN, else "" (none configured).
absl::StatusOr<std::string> ResolveToken(const std::string& token_file);

// A random 256-bit token, hex encoded (OpenSSL RAND_bytes).
std::string GenerateToken();

// Writes `token` to `path` with mode 0600 (replacing an existing file).
absl::Status WriteTokenFile(const std::string& path, const std::string& token);

// `flag` if non-empty, else $KVGRID_COORDINATOR, else 127.0.0.1:50051.
std::string ResolveCoordinatorAddress(const std::string& flag);

// Client side transport security. TLS is used when `tls_ca_file` is set (its PEM is the trust
// root) or `tls` is true (system roots). `tls_server_name` overrides the name checked against
// the certificate (e.g. when connecting by IP address to a certificate issued for a host name).
struct ClientSecurity {
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_server_name;
};

// `flag` if non-empty, else $KVGRID_TLS_CA, else "".
std::string ResolveTlsCa(const std::string& flag);

// Creates a channel to `address`. `own_connection` gives the channel its own TCP connection
// instead of sharing one with other channels to the same address in this process.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                           const ClientSecurity& security,
                                                           bool own_connection = false);

// Server credentials: TLS when both files are given, otherwise insecure (loopback by default).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const std::string& tls_cert_file, const std::string& tls_key_file);

// Adds `authorization: Bearer <token>` and a deadline of `timeout` from now.
void PrepareContext(grpc::ClientContext* ctx, const std::string& token,
                    std::chrono::milliseconds timeout);

// Constant-time check of the request's `authorization` metadata against `token`.
bool CheckBearer(const grpc::ServerContext& ctx, const std::string& token);

grpc::Status ToGrpcStatus(const absl::Status& status);
// Prefixes the message with `what` (e.g. "coordinator 127.0.0.1:50051").
absl::Status FromGrpcStatus(const grpc::Status& status, const std::string& what);

// Whether a failed call may succeed when retried later (coordinator restarting or unreachable).
bool IsTransient(const grpc::Status& status);

int64_t NowMs();

// Reads a whole file (errors name the path).
absl::StatusOr<std::string> ReadFile(const std::string& path);

}  // namespace kvgrid::rpc
