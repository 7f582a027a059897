#include "coordinator/client.h"

#include "absl/strings/str_cat.h"

namespace kvgrid {

absl::StatusOr<ClientOptions> ResolveClientOptions(const std::string& address_flag,
                                                   const std::string& token_file_flag,
                                                   const std::string& tls_ca_flag) {
  ClientOptions o;
  o.address = rpc::ResolveCoordinatorAddress(address_flag);
  auto token = rpc::ResolveToken(token_file_flag);
  if (!token.ok()) return token.status();
  o.token = *token;
  o.security.tls_ca_file = rpc::ResolveTlsCa(tls_ca_flag);
  return o;
}

absl::StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(
    const ClientOptions& options) {
  auto channel = rpc::MakeChannel(options.address, options.security);
  if (!channel.ok()) return channel.status();
  std::unique_ptr<CoordinatorClient> c(new CoordinatorClient(options));
  c->channel_ = *channel;
  c->stub_ = v1::Coordinator::NewStub(c->channel_);
  return c;
}

absl::StatusOr<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Connect(
    const ClientFlags& flags) {
  auto options = ResolveClientOptions(flags.coordinator, flags.token_file, flags.tls_ca);
  if (!options.ok()) return options.status();
  return Connect(*options);
}

void CoordinatorClient::Prepare(grpc::ClientContext* ctx) const {
  rpc::PrepareContext(ctx, options_.token, std::chrono::milliseconds(options_.timeout_ms));
  // Optionally wait for a coordinator that is still starting instead of failing at once.
  ctx->set_wait_for_ready(options_.wait_for_ready);
}

std::string CoordinatorClient::What(const char* method) const {
  return absl::StrCat("coordinator ", options_.address, " ", method);
}

absl::StatusOr<v1::SubmitResponse> CoordinatorClient::Submit(const std::string& grid_yaml,
                                                             const std::string& filename,
                                                             bool force) {
  v1::SubmitRequest req;
  req.set_grid_yaml(grid_yaml);
  req.set_filename(filename);
  req.set_force(force);
  v1::SubmitResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::Status st = stub_->Submit(&ctx, req, &resp);
  if (!st.ok()) {
    // Grid errors already carry file:line:column; keep them first on the line.
    if (st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      return absl::InvalidArgumentError(st.error_message());
    }
    return rpc::FromGrpcStatus(st, What("Submit"));
  }
  return resp;
}

absl::StatusOr<v1::StatusResponse> CoordinatorClient::Status(const std::string& experiment) {
  v1::StatusRequest req;
  req.set_experiment(experiment);
  v1::StatusResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::Status st = stub_->Status(&ctx, req, &resp);
  if (!st.ok()) return rpc::FromGrpcStatus(st, What("Status"));
  return resp;
}

absl::StatusOr<v1::CancelResponse> CoordinatorClient::Cancel(const std::string& experiment) {
  v1::CancelRequest req;
  req.set_experiment(experiment);
  v1::CancelResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::Status st = stub_->Cancel(&ctx, req, &resp);
  if (!st.ok()) return rpc::FromGrpcStatus(st, What("Cancel"));
  return resp;
}

absl::StatusOr<v1::ResultsResponse> CoordinatorClient::Results(const std::string& experiment,
                                                               bool include_samples) {
  v1::ResultsRequest req;
  req.set_experiment(experiment);
  req.set_include_samples(include_samples);
  v1::ResultsResponse resp;
  grpc::ClientContext ctx;
  Prepare(&ctx);
  grpc::Status st = stub_->Results(&ctx, req, &resp);
  if (!st.ok()) return rpc::FromGrpcStatus(st, What("Results"));
  return resp;
}

}  // namespace kvgrid
