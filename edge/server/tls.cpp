#include "edge/server/tls.hpp"

#include <array>
#include <fstream>
#include <iterator>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509err.h>

namespace edge::server {
namespace {

constexpr unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

// ALPN: http/1.1 or nothing (DESIGN §9: HTTP/2 framing would lose sendfile). A client that
// offers only h2 gets no ALPN answer and may still speak HTTP/1.1.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpn, sizeof kAlpn, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

void on_message(int write_p, int, int content_type, const void* buf, size_t len, SSL* ssl,
                void* arg) {
  auto* ev = static_cast<TlsPeerEvents*>(arg);
  if (write_p != 0 || ev == nullptr || !ev->established || len == 0)
    return;
  const auto* p = static_cast<const unsigned char*>(buf);
  if (content_type == SSL3_RT_HANDSHAKE) {
    if (p[0] == SSL3_MT_KEY_UPDATE) {
      ev->key_update = true;
      ++ev->key_updates_seen;
      // KeyUpdate body: 1 byte request_update after the 4-byte handshake header.
      if (len >= 5 && p[4] == 1)
        ev->key_update_requested = true;
    } else if (p[0] == SSL3_MT_CLIENT_HELLO) {
      ev->renegotiation = true;
    }
  } else if (content_type == SSL3_RT_HEADER && p[0] == SSL3_RT_HANDSHAKE &&
             SSL_version(ssl) <= TLS1_2_VERSION) {
    // A plaintext handshake record after a TLS 1.2 handshake: a renegotiation attempt.
    ev->renegotiation = true;
  }
}

}  // namespace

void watch_peer(SSL* ssl, TlsPeerEvents* events) {
  SSL_set_msg_callback(ssl, on_message);
  SSL_set_msg_callback_arg(ssl, events);
}

std::string drain_ssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty())
      out += "; ";
    const char* reason = ERR_reason_error_string(e);
    out += reason != nullptr ? reason : buf;
  }
  return out;
}

TlsContextPtr make_server_context(const TlsOptions& o, std::string& error,
                                  SSL_CTX* reuse_tickets_from) {
  ERR_clear_error();
  TlsContextPtr ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
  if (!ctx) {
    error = "tls: cannot create an OpenSSL context: " + drain_ssl_errors();
    return nullptr;
  }
  SSL_CTX* c = ctx.get();
  int floor = 0;
  if (o.min_protocol == "TLSv1.2") {
    floor = TLS1_2_VERSION;
  } else if (o.min_protocol == "TLSv1.3") {
    floor = TLS1_3_VERSION;
  } else {
    error = "tls.min_protocol: expected 'TLSv1.2' or 'TLSv1.3', got '" + o.min_protocol + "'";
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(c, floor);
  if (o.cert_file.empty() || o.key_file.empty()) {
    error = std::string(o.cert_file.empty() ? "tls.cert_file" : "tls.key_file") +
            ": required when [tls] listen is set";
    return nullptr;
  }
  // Read the files ourselves first so that a missing or unreadable one gets a plain message.
  for (const auto& [key, path] :
       {std::pair{"tls.cert_file", &o.cert_file}, std::pair{"tls.key_file", &o.key_file}}) {
    std::ifstream in(*path);
    if (!in) {
      error = std::string(key) + ": cannot read '" + *path + "'";
      return nullptr;
    }
  }
  if (SSL_CTX_use_certificate_chain_file(c, o.cert_file.c_str()) != 1) {
    error = "tls.cert_file: '" + o.cert_file + "' is not a PEM certificate chain (" +
            drain_ssl_errors() + ")";
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(c, o.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    const unsigned long last = ERR_peek_last_error();
    if (ERR_GET_LIB(last) == ERR_LIB_X509 && ERR_GET_REASON(last) == X509_R_KEY_VALUES_MISMATCH) {
      error = "tls.key_file: '" + o.key_file + "' does not match the certificate in '" +
              o.cert_file + "'";
      drain_ssl_errors();
    } else {
      error = "tls.key_file: '" + o.key_file + "' is not a PEM private key (" + drain_ssl_errors() +
              ")";
    }
    return nullptr;
  }
  if (SSL_CTX_check_private_key(c) != 1) {
    error = "tls.key_file: '" + o.key_file + "' does not match the certificate in '" + o.cert_file +
            "'";
    drain_ssl_errors();
    return nullptr;
  }
  if (!o.ciphers.empty() && SSL_CTX_set_cipher_list(c, o.ciphers.c_str()) != 1) {
    error = "tls.ciphers: no usable cipher in '" + o.ciphers + "'";
    drain_ssl_errors();
    return nullptr;
  }
  if (!o.ciphersuites.empty() && SSL_CTX_set_ciphersuites(c, o.ciphersuites.c_str()) != 1) {
    error = "tls.ciphersuites: no usable TLS 1.3 suite in '" + o.ciphersuites + "'";
    drain_ssl_errors();
    return nullptr;
  }
  if (!o.groups.empty() && SSL_CTX_set1_groups_list(c, o.groups.c_str()) != 1) {
    error = "tls.groups: no usable group in '" + o.groups + "'";
    drain_ssl_errors();
    return nullptr;
  }
  std::uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                       SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE;
  if (!o.session_tickets)
    opts |= SSL_OP_NO_TICKET;
  if (o.ktls)
    opts |= SSL_OP_ENABLE_KTLS;
  SSL_CTX_set_options(c, opts);
  // Partial writes: SSL_write returns after each record, so the write loop keeps its own
  // position; the buffer may move between retries (a reused staging buffer).
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
  // One ticket per full handshake is enough for a client that reconnects; two cost another
  // encryption and record for nothing.
  if (o.session_tickets)
    SSL_CTX_set_num_tickets(c, 1);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER);
  static constexpr unsigned char kSessionId[] = "bundle-edge";
  SSL_CTX_set_session_id_context(c, kSessionId, sizeof kSessionId - 1);
  SSL_CTX_set_alpn_select_cb(c, select_alpn, nullptr);
  if (reuse_tickets_from != nullptr && o.session_tickets) {
    std::array<unsigned char, 80> keys{};
    if (SSL_CTX_get_tlsext_ticket_keys(reuse_tickets_from, keys.data(), keys.size()) == 1)
      SSL_CTX_set_tlsext_ticket_keys(c, keys.data(), keys.size());
  }
  ERR_clear_error();
  return ctx;
}

bool kernel_tls_listed() {
  std::ifstream in("/proc/sys/net/ipv4/tcp_available_ulp");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.find("tls") != std::string::npos;
}

}  // namespace edge::server
