//! A certificate authority for tests, made with the openssl command-line tool: a CA and the
//! certificates it issues (P-256 keys, valid two days), as PEM files in a directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A CA whose key and certificate are files in `dir`.
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

fn openssl(args: &[&str], dir: &Path) -> Result<()> {
    let output = Command::new("openssl").args(args).current_dir(dir).output().context("running openssl (scripts/test installs it)")?;
    if !output.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

const KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

impl TestCa {
    /// A new CA called `name`, its files in `dir` (`NAME-ca.pem`, `NAME-ca.key`).
    pub fn new(dir: &Path, name: &str) -> Result<TestCa> {
        let (cert, key) = (format!("{name}-ca.pem"), format!("{name}-ca.key"));
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj"];
        let subject = format!("/CN={name} test CA");
        args.push(&subject);
        args.extend(KEY);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", &key, "-out", &cert]);
        openssl(&args, dir)?;
        Ok(TestCa { dir: dir.to_path_buf(), name: name.to_string() })
    }

    /// The CA's certificate file.
    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Issues a certificate for client and server use, subject `CN=cn`, with `sans`
    /// (`DNS:node-1`, `IP:127.0.0.1`); returns (certificate, key) files.
    pub fn issue(&self, cn: &str, sans: &[&str]) -> Result<(PathBuf, PathBuf)> {
        self.issue_for_days(cn, sans, 2)
    }

    /// As [`TestCa::issue`], valid for `days` from now (-1: it expired a day ago).
    pub fn issue_for_days(&self, cn: &str, sans: &[&str], days: i32) -> Result<(PathBuf, PathBuf)> {
        let stem = format!("{}-{cn}", self.name);
        let (cert, key, csr, ext) = (format!("{stem}.pem"), format!("{stem}.key"), format!("{stem}.csr"), format!("{stem}.ext"));
        let extensions = format!("subjectAltName={}\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n", sans.join(","));
        std::fs::write(self.dir.join(&ext), extensions)?;
        let subject = format!("/CN={cn}");
        let mut args = vec!["req", "-new", "-nodes", "-subj", &subject];
        args.extend(KEY);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(&args, &self.dir)?;
        let (ca_cert, ca_key) = (format!("{}-ca.pem", self.name), format!("{}-ca.key", self.name));
        let days = days.to_string();
        openssl(&["x509", "-req", "-in", &csr, "-CA", &ca_cert, "-CAkey", &ca_key, "-CAcreateserial", "-days", &days, "-extfile", &ext, "-out", &cert], &self.dir)?;
        Ok((self.dir.join(cert), self.dir.join(key)))
    }
}
