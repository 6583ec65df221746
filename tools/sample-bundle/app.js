console.log("bundle-edge sample bundle");
