// Fuzz target: hostile bytes on the TLS port. The bytes reach OpenSSL through the server's
// own read BIO (CipherFeed), fed in pieces the way the connection feeds them, with the
// server context of tls.cpp (ALPN, groups, tickets, renegotiation refused) and the peer
// watcher set as if the handshake were done, so that every handshake message the peer sends
// goes through its parsing. Nothing may crash, leak or read out of bounds.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "edge/server/tls.hpp"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace {

// A throwaway self-signed P-256 certificate in a temp dir, loaded as the server would.
SSL_CTX* server_context() {
  static SSL_CTX* ctx = [] {
    char dir[] = "/tmp/tls-fuzz-XXXXXX";
    if (mkdtemp(dir) == nullptr)
      std::abort();
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_sign(cert, key, EVP_sha256());
    edge::server::TlsOptions o;
    o.enabled = true;
    o.cert_file = std::string(dir) + "/cert.pem";
    o.key_file = std::string(dir) + "/key.pem";
    FILE* c = std::fopen(o.cert_file.c_str(), "w");
    FILE* k = std::fopen(o.key_file.c_str(), "w");
    if (c == nullptr || k == nullptr)
      std::abort();
    PEM_write_X509(c, cert);
    PEM_write_PrivateKey(k, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(c);
    std::fclose(k);
    X509_free(cert);
    EVP_PKEY_free(key);
    std::string error;
    static edge::server::TlsContextPtr keep = edge::server::make_server_context(o, error);
    if (!keep) {
      std::fprintf(stderr, "tls_fuzz: %s\n", error.c_str());
      std::abort();
    }
    std::remove(o.cert_file.c_str());
    std::remove(o.key_file.c_str());
    std::remove(dir);
    return keep.get();
  }();
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  SSL* ssl = SSL_new(server_context());
  edge::server::CipherFeed feed;
  edge::server::TlsPeerEvents events;
  events.established = true;  // parse every message the peer sends, as after a handshake
  feed.attach(ssl);
  SSL_set0_wbio(ssl, BIO_new(BIO_s_mem()));  // what the server answers is dropped
  edge::server::watch_peer(ssl, &events);
  SSL_set_accept_state(ssl);
  // The first byte picks the piece size: records split across reads, as on a slow link.
  const std::size_t piece = size > 0 ? 1 + data[0] % 64 : 1;
  std::size_t at = size > 0 ? 1 : 0;
  char plain[4096];
  bool done = false;
  for (std::size_t round = 0; !done && round < size + 64; ++round) {
    const std::size_t n = std::min({piece, size - at, feed.space_size()});
    if (n > 0) {
      std::copy(data + at, data + at + n, feed.space());
      feed.filled(n);
      at += n;
    }
    int r = 0;
    if (SSL_is_init_finished(ssl)) {
      std::size_t got = 0;
      r = SSL_read_ex(ssl, plain, sizeof plain, &got);
    } else {
      r = SSL_do_handshake(ssl);
    }
    const int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, r);
    if (err != SSL_ERROR_NONE && err != SSL_ERROR_WANT_READ)
      done = true;  // a failed handshake or record: the server would close here
    if (at == size && err == SSL_ERROR_WANT_READ)
      done = true;  // every byte fed
  }
  (void)edge::server::drain_ssl_errors();
  SSL_free(ssl);
  return 0;
}
