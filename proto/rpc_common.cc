#include "proto/rpc_common.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kvgrid::rpc {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return ss.str();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("token file ", text.status().message()));
  }
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("token file ", path, ": empty"));
  }
  if (token.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": the token must be a single line without spaces"));
  }
  return token;
}

absl::StatusOr<std::string> ResolveToken(const std::string& token_file) {
  if (!token_file.empty()) return ReadTokenFile(token_file);
  if (const char* f = std::getenv("KVGRID_TOKEN_FILE"); f != nullptr && *f != '\0') {
    return ReadTokenFile(f);
  }
  if (const char* t = std::getenv("KVGRID_TOKEN"); t != nullptr && *t != '\0') {
    return std::string(absl::StripAsciiWhitespace(t));
  }
  return std::string();
}

std::string GenerateToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
    // Fall back to /dev/urandom; RAND_bytes failing is practically impossible.
    int fd = ::open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
      ssize_t n = ::read(fd, bytes, sizeof(bytes));
      (void)n;
      ::close(fd);
    }
  }
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : bytes) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

absl::Status WriteTokenFile(const std::string& path, const std::string& token) {
  std::string tmp = absl::StrCat(path, ".tmp.", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot create token file: ", std::strerror(errno)));
  }
  std::string line = token + "\n";
  ssize_t n = ::write(fd, line.data(), line.size());
  ::fchmod(fd, 0600);
  ::close(fd);
  if (n != static_cast<ssize_t>(line.size()) || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(path, ": cannot write token file: ",
                                            std::strerror(errno)));
  }
  return absl::OkStatus();
}

std::string ResolveCoordinatorAddress(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* a = std::getenv("KVGRID_COORDINATOR"); a != nullptr && *a != '\0') return a;
  return kDefaultCoordinatorAddress;
}

std::string ResolveTlsCa(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* a = std::getenv("KVGRID_TLS_CA"); a != nullptr && *a != '\0') return a;
  return "";
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                           const ClientSecurity& security,
                                                           bool own_connection) {
  if (address.empty()) return absl::InvalidArgumentError("coordinator address is empty");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  // Reconnect quickly once the coordinator is back (workers have their own back-off on top).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  if (own_connection) args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (security.tls || !security.tls_ca_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    if (!security.tls_ca_file.empty()) {
      auto pem = ReadFile(security.tls_ca_file);
      if (!pem.ok()) {
        return absl::Status(pem.status().code(),
                            absl::StrCat("TLS CA file ", pem.status().message()));
      }
      ssl.pem_root_certs = *pem;
    }
    if (!security.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(security.tls_server_name);
    }
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel(address, creds, args);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const std::string& tls_cert_file, const std::string& tls_key_file) {
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together");
  }
  if (tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  auto cert = ReadFile(tls_cert_file);
  if (!cert.ok()) {
    return absl::Status(cert.status().code(),
                        absl::StrCat("TLS certificate ", cert.status().message()));
  }
  auto key = ReadFile(tls_key_file);
  if (!key.ok()) {
    return absl::Status(key.status().code(), absl::StrCat("TLS key ", key.status().message()));
  }
  if (!absl::StrContains(*cert, "-----BEGIN CERTIFICATE-----")) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS certificate ", tls_cert_file, ": not a PEM certificate"));
  }
  if (!absl::StrContains(*key, "PRIVATE KEY-----")) {
    return absl::InvalidArgumentError(
        absl::StrCat("TLS key ", tls_key_file, ": not a PEM private key"));
  }
  grpc::SslServerCredentialsOptions opts;
  opts.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(opts);
}

void PrepareContext(grpc::ClientContext* ctx, const std::string& token,
                    std::chrono::milliseconds timeout) {
  if (!token.empty()) ctx->AddMetadata(kAuthMetadataKey, "Bearer " + token);
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
}

bool CheckBearer(const grpc::ServerContext& ctx, const std::string& token) {
  if (token.empty()) return false;
  const auto& md = ctx.client_metadata();
  auto it = md.find(kAuthMetadataKey);
  if (it == md.end()) return false;
  std::string value(it->second.data(), it->second.size());
  const std::string expected = "Bearer " + token;
  if (value.size() != expected.size()) return false;
  return CRYPTO_memcmp(value.data(), expected.data(), expected.size()) == 0;
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(static_cast<int>(status.code())),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status, const std::string& what) {
  if (status.ok()) return absl::OkStatus();
  std::string msg = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    msg = absl::StrCat("unreachable (", msg, ")");
  } else if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) {
    msg = absl::StrCat("refused (UNAUTHENTICATED): ", msg);
  }
  return absl::Status(static_cast<absl::StatusCode>(static_cast<int>(status.error_code())),
                      absl::StrCat(what, ": ", msg));
}

bool IsTransient(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::CANCELLED:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
      return true;
    default:
      return false;
  }
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace kvgrid::rpc
