from jupyter_cake.nanny.nanny import main

if __name__ == "__main__":
    main()
