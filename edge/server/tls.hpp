#pragma once

#include <cstdint>
#include <memory>
#include <string>

using SSL_CTX = struct ssl_ctx_st;
using SSL = struct ssl_st;

namespace edge::server {

/// The [tls] table of the config (DESIGN §9). TLS is on when `enabled`; the listener is
/// `listen_host:listen_port`, and the admin listener speaks TLS too when `admin` is set.
struct TlsOptions {
  bool enabled = false;
  std::string listen_host = "0.0.0.0";
  std::uint16_t listen_port = 8443;      ///< 0: any free port (tests)
  std::string cert_file;                 ///< PEM: the leaf first, then the intermediates
  std::string key_file;                  ///< PEM private key of the leaf
  std::string min_protocol = "TLSv1.2";  ///< "TLSv1.2" or "TLSv1.3"
  /// TLS 1.2 cipher list (OpenSSL syntax): Mozilla's "intermediate" AEAD suites.
  std::string ciphers =
      "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
      "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
  /// TLS 1.3 suites, in the order offered: AES-128-GCM first (the cheapest with AES-NI).
  std::string ciphersuites =
      "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
  std::string groups = "X25519:P-256:P-384";  ///< key-exchange groups, preferred first
  bool session_tickets = true;                ///< resumption by stateless tickets
  bool ktls = true;                           ///< hand the send side to the kernel if it can
  bool admin = false;                         ///< the admin listener speaks TLS too
};

/// Owning handle of an OpenSSL server context.
using TlsContextPtr = std::shared_ptr<SSL_CTX>;

/// Builds a server context from `options`: certificate chain and key loaded and checked
/// against each other, protocol floor, ciphers, groups, ALPN "http/1.1" only, tickets,
/// renegotiation refused, SSL_OP_ENABLE_KTLS when `options.ktls`. When `reuse_tickets_from`
/// is given, its ticket keys are kept (a reload must not void the tickets clients hold).
/// On failure returns null and sets `error` to a message naming the key and the file.
TlsContextPtr make_server_context(const TlsOptions& options, std::string& error,
                                  SSL_CTX* reuse_tickets_from = nullptr);

/// What a peer did after its handshake that the server must know of: set by the message
/// callback `watch_peer` installs, read by the connection after each SSL call.
struct TlsPeerEvents {
  bool established = false;           ///< set by the connection once its handshake is done
  bool renegotiation = false;         ///< a TLS 1.2 ClientHello after the handshake
  bool key_update = false;            ///< a TLS 1.3 KeyUpdate
  bool key_update_requested = false;  ///< ... asking for ours too (kTLS cannot rekey: close)
  unsigned key_updates_seen = 0;      ///< KeyUpdates counted so far (for the metric)
};

/// Installs the message callback on `ssl` that fills `events` (which must outlive `ssl`).
void watch_peer(SSL* ssl, TlsPeerEvents* events);

/// Whether this kernel offers the "tls" upper-layer protocol (kernel TLS): the contents of
/// /proc/sys/net/ipv4/tcp_available_ulp. The module may also load on first use, so this is
/// only a hint for logs; each connection asks OpenSSL (BIO_get_ktls_send) for the truth.
bool kernel_tls_listed();

/// The OpenSSL error queue as one line ("reason; reason"), cleared; "" when empty.
std::string drain_ssl_errors();

}  // namespace edge::server
